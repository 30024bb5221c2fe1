//! Connection URLs that may carry credentials (`postgres://user:password@…`,
//! `amqp://guest:guest@…`). The password is only handed out to connect;
//! `Debug` and `Display` show the URL with it replaced, so printing settings
//! or a banner never puts it in a terminal or a log.

use std::fmt;

use serde::Deserialize;

/// What a password (or a `password` query parameter) is shown as.
pub const REDACTED: &str = "REDACTED";

/// A URL whose password never reaches `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL as configured, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced. A URL that does not parse could
    /// hold a password anywhere, so none of it is shown.
    pub fn redacted(&self) -> String {
        let Ok(mut url) = url::Url::parse(&self.0) else {
            return "<not a valid URL>".to_owned();
        };
        if url.password().is_some() {
            // Fails only for URLs that cannot have credentials at all.
            url.set_password(Some(REDACTED)).ok();
        }
        let has_password_parameter = url
            .query_pairs()
            .any(|(name, _)| name.eq_ignore_ascii_case("password"));
        if has_password_parameter {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(name, value)| {
                    let value = if name.eq_ignore_ascii_case("password") {
                        REDACTED.to_owned()
                    } else {
                        value.into_owned()
                    };
                    (name.into_owned(), value)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_and_the_rest_is_kept() {
        let cases = [
            (
                "postgres://app:pa55word@db.internal:5432/finch",
                "postgres://app:REDACTED@db.internal:5432/finch",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:REDACTED@127.0.0.1:5672/%2f",
            ),
            (
                "postgres://db.internal/finch?user=app&password=pa55word&sslmode=require",
                "postgres://db.internal/finch?user=app&password=REDACTED&sslmode=require",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/finch",
                "postgres://postgres@127.0.0.1:5432/finch",
            ),
            ("not a url pa55word", "<not a valid URL>"),
        ];
        for (configured, shown) in cases {
            let url = SecretUrl::new(configured);
            assert_eq!(url.to_string(), shown);
            assert_eq!(format!("{url:?}"), format!("{shown:?}"));
            assert_eq!(url.expose(), configured);
        }
    }
}
