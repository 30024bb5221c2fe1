//! The operator console: server-rendered pages over [`crate::ops`] under
//! `/console/`, served with the admin API (and only when it is).
//!
//! Signing in exchanges the admin token for a session cookie (see
//! [`session`]); every page needs a session and every form a CSRF token.
//! Pages are [minijinja] templates compiled into the binary, with a little
//! JavaScript that only improves them (auto-refresh, confirmations): without
//! it every page and action still works.

mod connections;
mod dead_letters;
mod error;
mod events;
mod overview;
mod session;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;
use tokio::sync::Mutex;

pub use error::ConsoleError;
use session::SignedIn;

use crate::config::ConsoleConfig;

/// Where the console is mounted; every link is built from it.
pub const PREFIX: &str = "/console";

/// What the console is built from, handed over by the admin API.
pub struct ConsoleDeps {
    pub pool: PgPool,
    pub amqp_url: crate::secret_url::SecretUrl,
    /// The retry ladder, for the queue depths and the topology replays declare.
    pub retry_delays: Arc<[Duration]>,
    /// SHA-256 of the admin token, which signing in must match.
    pub token_digest: [u8; 32],
    /// Shared with the admin API: one DLQ operation at a time per process.
    pub exclusive: Arc<Mutex<()>>,
    /// Shared with the admin API: wrong tokens count against one allowance per client.
    pub(crate) throttle: Arc<crate::admin::throttle::AuthThrottle>,
    pub config: ConsoleConfig,
}

#[derive(Clone)]
struct ConsoleState {
    inner: Arc<Inner>,
}

struct Inner {
    deps: ConsoleDeps,
    /// The compiled templates.
    templates: templates::Templates,
}

impl std::ops::Deref for ConsoleState {
    type Target = ConsoleDeps;
    fn deref(&self) -> &ConsoleDeps {
        &self.inner.deps
    }
}

/// The console's routes, with their full paths under [`PREFIX`].
pub fn router(deps: ConsoleDeps) -> Router {
    let state = ConsoleState {
        inner: Arc::new(Inner {
            deps,
            templates: templates::Templates::new(),
        }),
    };
    let path = |tail: &str| format!("{PREFIX}{tail}");
    Router::new()
        .route(&path(""), get(|| async { redirect("/") }))
        .route(&path("/"), get(overview::show))
        .route(&path("/sign-in"), get(session::form).post(session::sign_in))
        .route(&path("/sign-out"), post(session::sign_out))
        .route(&path("/events"), get(events::search))
        .route(&path("/events/{event_id}"), get(events::show))
        .route(&path("/dead-letters"), get(dead_letters::list))
        .route(&path("/dead-letters/replay"), post(dead_letters::replay))
        .route(&path("/dead-letters/purge"), post(dead_letters::purge))
        .route(&path("/replays/{id}"), get(dead_letters::job))
        .route(&path("/connections"), get(connections::list))
        .route(
            &path("/connections/{connection_id}/resync"),
            post(connections::resync),
        )
        .route(&path("/static/console.css"), get(templates::stylesheet))
        .route(&path("/static/console.js"), get(templates::script))
        .layer(middleware::from_fn(protective_headers))
        .with_state(state)
}

/// The admin token `dev` signs in with: the configured one, or a random
/// one set for this run, so a development console is never open to all.
pub fn dev_token(admin_token: &mut Option<secrecy::SecretString>) -> String {
    use secrecy::ExposeSecret as _;
    let token =
        admin_token.get_or_insert_with(|| secrecy::SecretString::from(session::random_token()));
    token.expose_secret().to_owned()
}

/// A redirect to a console path (`/` is the overview).
fn redirect(tail: &str) -> Response {
    axum::response::Redirect::to(&format!("{PREFIX}{tail}")).into_response()
}

/// Pages hold employee data and act on the pipeline: never cached, never
/// framed, and nothing but the console's own files may run in them.
async fn protective_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

impl ConsoleState {
    /// Renders a page for a signed-in operator.
    fn page(
        &self,
        template: &str,
        signed_in: &SignedIn,
        section: &str,
        context: minijinja::Value,
    ) -> Result<Response, ConsoleError> {
        self.inner.templates.render(
            template,
            minijinja::context! {
                prefix => PREFIX,
                csrf => signed_in.csrf_token(),
                section => section,
                ..context
            },
        )
    }
}
