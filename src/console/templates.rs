//! The pages' templates and static files, compiled into the binary so that
//! nothing needs building or installing beside it. `.html` templates escape
//! every value they print.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::ConsoleError;

const TEMPLATES: [(&str, &str); 9] = [
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("events.html", include_str!("templates/events.html")),
    ("event.html", include_str!("templates/event.html")),
    (
        "dead_letters.html",
        include_str!("templates/dead_letters.html"),
    ),
    ("replay_job.html", include_str!("templates/replay_job.html")),
    (
        "connections.html",
        include_str!("templates/connections.html"),
    ),
    ("macros.html", include_str!("templates/macros.html")),
];

pub(super) struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    pub fn new() -> Self {
        let mut env = minijinja::Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|error| panic!("console template {name} does not parse: {error}"));
        }
        env.add_filter("when", when);
        Self { env }
    }

    pub fn render(&self, name: &str, context: minijinja::Value) -> Result<Response, ConsoleError> {
        let html = self
            .env
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(|error| {
                ConsoleError::Internal(anyhow::anyhow!("rendering {name}: {error:#}"))
            })?;
        Ok(Html(html).into_response())
    }
}

/// An RFC 3339 time as people read it, to the second, in UTC; anything
/// else (`none`, an empty value) as a dash.
fn when(value: minijinja::Value) -> String {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| {
            at.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|| "–".to_owned())
}

pub(super) async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/console.css"),
    )
}

pub(super) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/console.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let templates = Templates::new();
        let page = templates
            .env
            .get_template("event.html")
            .unwrap()
            .render(minijinja::context! {
                prefix => "/console",
                csrf => "token",
                section => "events",
                event => minijinja::context! { event_id => "evt_<b>", stage => "processed" },
                body => "{\"x\": \"</code><script>alert(1)</script>\"}",
                steps => Vec::<()>::new(),
            })
            .unwrap();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)"), "{page}");
        assert!(page.contains("evt_&lt;b&gt;"), "{page}");
        assert!(page.contains("name=\"csrf\" value=\"token\""), "{page}");
    }

    #[test]
    fn times_read_as_utc_to_the_second() {
        assert_eq!(
            when(minijinja::Value::from("2026-05-01T12:00:00.123+02:00")),
            "2026-05-01 10:00:00 UTC"
        );
        assert_eq!(when(minijinja::Value::from(())), "–");
    }
}
