//! Sign-in: the admin token, posted once, buys a session cookie.
//!
//! The cookie holds 32 random bytes; the database keeps only their SHA-256,
//! with the session's CSRF token and expiry. The cookie is `HttpOnly`,
//! `SameSite=Strict`, scoped to the console, and `Secure` when the request
//! came over TLS (by the proxy's `X-Forwarded-Proto`) or the settings say
//! so. The token itself travels only in the sign-in form's body and is
//! compared by digest; it is never stored, shown, put in a URL or logged.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{redirect, ConsoleError, ConsoleState, PREFIX};
use crate::admin::throttle::Verdict;
use crate::store::console as store;

/// Name of the session cookie.
pub const COOKIE: &str = "finch_console";

/// The operator behind a request with a live session.
pub(super) struct SignedIn {
    /// What forms must send back.
    csrf_token: String,
    /// Digest of the cookie, to end the session on sign-out.
    id_digest: [u8; 32],
}

impl SignedIn {
    pub fn csrf_token(&self) -> &str {
        &self.csrf_token
    }

    /// Refuses a form whose CSRF token is missing or not this session's.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), ConsoleError> {
        let presented = presented.unwrap_or_default();
        if !presented.is_empty()
            && bool::from(presented.as_bytes().ct_eq(self.csrf_token.as_bytes()))
        {
            Ok(())
        } else {
            tracing::warn!("console form refused: missing or wrong CSRF token");
            Err(ConsoleError::Csrf)
        }
    }
}

impl FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, ConsoleError> {
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(ConsoleError::SignInNeeded);
        };
        let id_digest: [u8; 32] = Sha256::digest(cookie.as_bytes()).into();
        match store::find_session(&state.pool, &id_digest).await? {
            Some(session) => Ok(Self {
                csrf_token: session.csrf_token,
                id_digest,
            }),
            None => Err(ConsoleError::SignInNeeded),
        }
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `GET /console/sign-in`.
pub(super) async fn form(State(state): State<ConsoleState>) -> Result<Response, ConsoleError> {
    state.inner.templates.render(
        "sign_in.html",
        minijinja::context! { prefix => PREFIX, refused => false },
    )
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    /// The admin token; absent is the same as wrong.
    #[serde(default)]
    token: String,
}

/// `POST /console/sign-in`.
pub(super) async fn sign_in(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    // The admin API's allowance of wrong tokens covers this form too: checked
    // first, so a refused client learns nothing from its guess.
    if let Some(retry_after) = state.throttle.refused(peer.ip()) {
        return Ok(too_many_failures(retry_after));
    }
    let digest: [u8; 32] = Sha256::digest(form.token.trim().as_bytes()).into();
    if !bool::from(digest.ct_eq(&state.token_digest)) {
        if let Verdict::Refused { retry_after } = state.throttle.failed(peer.ip()) {
            return Ok(too_many_failures(retry_after));
        }
        let mut page = state.inner.templates.render(
            "sign_in.html",
            minijinja::context! { prefix => PREFIX, refused => true },
        )?;
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(page);
    }
    let id = random_token();
    let id_digest: [u8; 32] = Sha256::digest(id.as_bytes()).into();
    let ttl = state.config.session_ttl;
    store::create_session(&state.pool, &id_digest, &random_token(), ttl).await?;
    let behind_tls = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let secure = if state.config.secure_cookie || behind_tls {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path={PREFIX}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        ttl.as_secs()
    );
    tracing::info!("console sign-in");
    let mut response = redirect("/");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|error| ConsoleError::Internal(error.into()))?,
    );
    Ok(response)
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    csrf: Option<String>,
}

impl CsrfOnly {
    pub fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /console/sign-out`: ends the session here and in the browser.
pub(super) async fn sign_out(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    signed_in.check_csrf(form.csrf())?;
    store::delete_session(&state.pool, &signed_in.id_digest).await?;
    let mut response = redirect("/sign-in");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path={PREFIX}; Max-Age=0; HttpOnly; SameSite=Strict"
        ))
        .map_err(|error| ConsoleError::Internal(error.into()))?,
    );
    Ok(response.into_response())
}

/// 429 for a client over its allowance of wrong tokens.
fn too_many_failures(retry_after: std::time::Duration) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(
            header::RETRY_AFTER,
            retry_after.as_secs().max(1).to_string(),
        )],
        "Too many wrong tokens from this address; try again later.",
    )
        .into_response()
}
