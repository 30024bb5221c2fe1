//! The HTTP side of the Finch API.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument as _;

use super::{ErrorClass, FailureClass, Product, API_VERSION};
use crate::config::FinchApiConfig;

/// A successful (2xx other than 202) response.
#[derive(Debug, Clone)]
pub struct FinchResponse {
    pub body: Value,
    /// `Finch-Data-Retrieved`: when Finch read the data from the provider.
    pub data_retrieved_at: Option<DateTime<Utc>>,
    pub request_id: Option<String>,
}

/// A failed request. Carries no token and no response data, only Finch's
/// error fields, which name ids but no personal data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FinchError {
    #[error("Finch answered {status} {}: {message}", finch_code.as_deref().or(name.as_deref()).unwrap_or("error"))]
    Api {
        status: u16,
        name: Option<String>,
        finch_code: Option<String>,
        message: String,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("request to Finch failed: {message}")]
    Transport { message: String },
    #[error("unexpected response from Finch: {message}")]
    Decode {
        message: String,
        request_id: Option<String>,
    },
}

impl FinchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            FinchError::Api {
                status, finch_code, ..
            } => match *status {
                401 if finch_code.as_deref() == Some("reauthenticate_user") => {
                    ErrorClass::Reauthenticate
                }
                202 | 408 | 429 => ErrorClass::Retry,
                status if status >= 500 => ErrorClass::Retry,
                _ => ErrorClass::Client,
            },
            FinchError::Transport { .. } | FinchError::Decode { .. } => ErrorClass::Retry,
        }
    }

    /// The failure class, from the status and `finch_code` Finch documents.
    pub fn failure_class(&self) -> FailureClass {
        let FinchError::Api {
            status, finch_code, ..
        } = self
        else {
            return FailureClass::ServerError;
        };
        match (*status, finch_code.as_deref()) {
            (_, Some("reauthenticate_user")) => FailureClass::Reauthenticate,
            (_, Some("account_setup_required")) => FailureClass::AccountSetupRequired,
            (_, Some("insufficient_account_permissions")) => FailureClass::InsufficientPermissions,
            (202, Some("data_sync_in_progress")) => FailureClass::NotReady,
            (202, _) => FailureClass::Pending,
            (429, Some("finch_api_ip_rl")) => FailureClass::IpRateLimit,
            (429, Some("upstream_rate_limit_exceeded")) => FailureClass::UpstreamRateLimit,
            (429, _) => FailureClass::ApplicationRateLimit,
            (408, _) => FailureClass::ServerError,
            (status, _) if status >= 500 => FailureClass::ServerError,
            _ => FailureClass::Client,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            FinchError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn finch_code(&self) -> Option<&str> {
        match self {
            FinchError::Api { finch_code, .. } => finch_code.as_deref(),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            FinchError::Api { request_id, .. } | FinchError::Decode { request_id, .. } => {
                request_id.as_deref()
            }
            FinchError::Transport { .. } => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FinchError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// An error from a batch item (`{"code": 404, "body": {...}}` inside a 200).
    pub fn from_item(code: u16, body: &Value, request_id: Option<&str>) -> Self {
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        FinchError::Api {
            status: code,
            name: text("name"),
            finch_code: text("finch_code"),
            message: text("message").unwrap_or_default(),
            request_id: request_id.map(str::to_owned),
            retry_after: None,
        }
    }
}

/// What `/introspect` says about a token.
#[derive(Debug, Clone, Deserialize)]
pub struct Introspection {
    pub connection_id: Option<String>,
    #[serde(default)]
    pub products: Vec<String>,
    pub provider_id: Option<String>,
    pub payroll_provider_id: Option<String>,
    pub connection_status: Option<ConnectionStatus>,
    /// `true` for the Assisted Connect flow.
    pub manual: Option<bool>,
    /// How the employer connected; `assisted` marks an assisted connection.
    #[serde(default)]
    pub authentication_methods: Vec<AuthenticationMethod>,
    /// The entities of the connection; with several, every read names one.
    #[serde(default)]
    pub entities: Vec<Entity>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionStatus {
    pub status: Option<String>,
    /// When Finch last refreshed the connection's data (ISO-8601; read
    /// leniently, since an odd format must not fail the whole answer).
    pub last_successful_sync: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthenticationMethod {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub connection_status: Option<ConnectionStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Entity {
    pub id: String,
}

impl Introspection {
    pub fn status(&self) -> &str {
        self.connection_status
            .as_ref()
            .and_then(|status| status.status.as_deref())
            .unwrap_or("connected")
    }

    /// `assisted` or `automated`.
    pub fn kind(&self) -> &'static str {
        let assisted = self.manual == Some(true)
            || self
                .authentication_methods
                .iter()
                .any(|method| method.kind.as_deref() == Some("assisted"));
        if assisted {
            "assisted"
        } else {
            "automated"
        }
    }

    /// Finch's latest refresh, from the connection's status or any
    /// authentication method's.
    pub fn last_successful_sync(&self) -> Option<DateTime<Utc>> {
        self.connection_status
            .iter()
            .chain(
                self.authentication_methods
                    .iter()
                    .filter_map(|method| method.connection_status.as_ref()),
            )
            .filter_map(|status| status.last_successful_sync.as_ref()?.as_str())
            .filter_map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|time| time.with_timezone(&Utc))
                    .or_else(|_| {
                        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                            .map(|naive| naive.and_utc())
                    })
                    .ok()
            })
            .max()
    }

    pub fn entity_ids(&self) -> Vec<String> {
        self.entities
            .iter()
            .map(|entity| entity.id.clone())
            .collect()
    }

    pub fn provider(&self) -> Option<&str> {
        self.provider_id
            .as_deref()
            .or(self.payroll_provider_id.as_deref())
    }
}

/// The result of exchanging an authorization code.
#[derive(Clone, Deserialize)]
pub struct TokenGrant {
    pub access_token: SecretString,
    pub connection_id: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}

/// One Finch request: the observer hears about it (for metrics) once it has
/// an answer.
pub type Observer = std::sync::Arc<dyn Fn(&str, Option<u16>) + Send + Sync>;

#[derive(Clone)]
pub struct FinchClient {
    http: reqwest::Client,
    base_url: String,
    config: FinchApiConfig,
    observer: Option<Observer>,
    /// The entity of a multi-entity connection that `/employer/*` reads name.
    entity: Option<String>,
}

impl std::fmt::Debug for FinchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinchClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl FinchClient {
    pub fn new(config: &FinchApiConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("finch-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client can be built");
        Self {
            http,
            base_url: config.base_url.clone(),
            config: config.clone(),
            observer: None,
            entity: None,
        }
    }

    /// This client for one entity: every `/employer/*` read names it in
    /// `entity_ids[]`, as Finch requires for a connection with several.
    pub fn for_entity(&self, entity: Option<&str>) -> Self {
        let mut client = self.clone();
        client.entity = entity.map(str::to_owned);
        client
    }

    /// Reports every request's endpoint label and status (None: no answer).
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn send(
        &self,
        label: &str,
        token: Option<&SecretString>,
        request: reqwest::RequestBuilder,
    ) -> Result<FinchResponse, FinchError> {
        let mut request = request.header("Finch-API-Version", API_VERSION);
        if let Some(entity) = self.entity.as_deref().filter(|_| label_is_data(label)) {
            request = request.query(&[(ENTITY_IDS_PARAM, entity)]);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token.expose_secret());
        }
        let request = request.build().map_err(|error| FinchError::Transport {
            message: error.without_url().to_string(),
        })?;
        let span = tracing::info_span!(
            "finch request",
            otel.kind = "client",
            otel.name = format!("{} {label}", request.method()),
            http.request.method = %request.method(),
            finch.product = label,
            http.response.status_code = tracing::field::Empty,
            finch.request_id = tracing::field::Empty,
        );
        let response = match self.http.execute(request).instrument(span.clone()).await {
            Ok(response) => response,
            Err(error) => {
                if let Some(observer) = &self.observer {
                    observer(label, None);
                }
                // Without the URL: it is ours, and a query could name dates.
                let message = if error.is_timeout() {
                    "timed out".to_owned()
                } else if error.is_connect() {
                    "could not connect".to_owned()
                } else {
                    error.without_url().to_string()
                };
                tracing::warn!(endpoint = label, %message, "Finch request failed");
                return Err(FinchError::Transport { message });
            }
        };
        let status = response.status();
        if let Some(observer) = &self.observer {
            observer(label, Some(status.as_u16()));
        }
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("finch-request-id");
        span.record("http.response.status_code", status.as_u16());
        if let Some(request_id) = &request_id {
            span.record("finch.request_id", request_id.as_str());
        }
        let _entered = span.enter();
        // Few by design (the rate budget caps them), and Finch support asks for the id.
        tracing::info!(
            endpoint = label,
            status = status.as_u16(),
            finch_request_id = request_id.as_deref().unwrap_or(""),
            "Finch response"
        );
        let retry_after = header("retry-after")
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let data_retrieved_at = header("finch-data-retrieved")
            .and_then(|value| DateTime::parse_from_rfc3339(&value).ok())
            .map(|time| time.with_timezone(&Utc));
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                return Err(FinchError::Transport {
                    message: error.without_url().to_string(),
                })
            }
        };
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status == StatusCode::ACCEPTED || !status.is_success() {
            let body = body.unwrap_or(Value::Null);
            let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
            let error = FinchError::Api {
                status: status.as_u16(),
                name: text("name"),
                finch_code: text("finch_code"),
                message: text("message")
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
                request_id: request_id.clone(),
                retry_after,
            };
            tracing::info!(
                endpoint = label,
                status = status.as_u16(),
                finch_code = error.finch_code().unwrap_or(""),
                finch_request_id = request_id.as_deref().unwrap_or(""),
                "Finch refused the request"
            );
            return Err(error);
        }
        let body = body.ok_or_else(|| FinchError::Decode {
            message: format!("{label} did not answer JSON"),
            request_id: request_id.clone(),
        })?;
        Ok(FinchResponse {
            body,
            data_retrieved_at,
            request_id,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn introspect(&self, token: &SecretString) -> Result<Introspection, FinchError> {
        let response = self
            .send(
                "introspect",
                Some(token),
                self.http.get(self.url("/introspect")),
            )
            .await?;
        decode(response.body, "introspect", response.request_id)
    }

    /// Exchanges an authorization code with the application's credentials.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<TokenGrant, anyhow::Error> {
        let client_id = self.config.client_id.as_deref().ok_or_else(|| {
            crate::config::ConfigError::new("finch_client_id", "not set; --code needs it")
        })?;
        let client_secret = self.config.client_secret.as_ref().ok_or_else(|| {
            crate::config::ConfigError::new("finch_client_secret", "not set; --code needs it")
        })?;
        let mut body = json!({
            "client_id": client_id,
            "client_secret": client_secret.expose_secret(),
            "code": code,
        });
        if let Some(uri) = redirect_uri {
            body["redirect_uri"] = json!(uri);
        }
        let response = self
            .send(
                "auth/token",
                None,
                self.http.post(self.url("/auth/token")).json(&body),
            )
            .await?;
        Ok(decode(response.body, "auth/token", response.request_id)?)
    }

    pub async fn disconnect(&self, token: &SecretString) -> Result<(), FinchError> {
        self.send(
            "disconnect",
            Some(token),
            self.http.post(self.url("/disconnect")).json(&json!({})),
        )
        .await
        .map(drop)
    }

    pub async fn company(&self, token: &SecretString) -> Result<FinchResponse, FinchError> {
        self.send(
            Product::Company.as_str(),
            Some(token),
            self.http.get(self.url(Product::Company.path())),
        )
        .await
    }

    pub async fn directory_page(
        &self,
        token: &SecretString,
        limit: u32,
        offset: u64,
    ) -> Result<FinchResponse, FinchError> {
        self.send(
            Product::Directory.as_str(),
            Some(token),
            self.http
                .get(self.url(Product::Directory.path()))
                .query(&[("limit", u64::from(limit)), ("offset", offset)]),
        )
        .await
    }

    /// `POST /employer/individual` or `/employer/employment` for `ids`.
    pub async fn individuals_batch(
        &self,
        product: Product,
        token: &SecretString,
        ids: &[String],
    ) -> Result<FinchResponse, FinchError> {
        let requests: Vec<Value> = ids
            .iter()
            .map(|id| json!({ "individual_id": id }))
            .collect();
        self.send(
            product.as_str(),
            Some(token),
            self.http
                .post(self.url(product.path()))
                .json(&json!({ "requests": requests })),
        )
        .await
    }

    pub async fn payments(
        &self,
        token: &SecretString,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<FinchResponse, FinchError> {
        self.send(
            Product::Payment.as_str(),
            Some(token),
            self.http.get(self.url(Product::Payment.path())).query(&[
                ("start_date", start.to_string()),
                ("end_date", end.to_string()),
            ]),
        )
        .await
    }

    /// One `/employer/pay-statement` request: `(payment_id, offset)` pages of `limit`.
    pub async fn pay_statements(
        &self,
        token: &SecretString,
        pages: &[(String, u64)],
        limit: u32,
    ) -> Result<FinchResponse, FinchError> {
        let requests: Vec<Value> = pages
            .iter()
            .map(|(id, offset)| json!({ "payment_id": id, "offset": offset, "limit": limit }))
            .collect();
        self.send(
            Product::PayStatement.as_str(),
            Some(token),
            self.http
                .post(self.url(Product::PayStatement.path()))
                .json(&json!({ "requests": requests })),
        )
        .await
    }

    /// `GET /jobs/automated/{id}` or `/jobs/manual/{id}`. Built from our base
    /// URL and the job id, never from the event's `job_url`, so that a token
    /// is only ever sent to the configured Finch.
    pub async fn job(
        &self,
        token: &SecretString,
        manual: bool,
        job_id: &str,
    ) -> Result<FinchResponse, FinchError> {
        let kind = if manual { "manual" } else { "automated" };
        let mut url = url::Url::parse(&self.url("/jobs/")).map_err(|_| FinchError::Decode {
            message: "invalid base URL".into(),
            request_id: None,
        })?;
        url.path_segments_mut()
            .map_err(|_| FinchError::Decode {
                message: "invalid base URL".into(),
                request_id: None,
            })?
            .pop_if_empty()
            .push(kind)
            .push(job_id);
        self.send("jobs", Some(token), self.http.get(url)).await
    }
}

/// How the official SDK names the entity of a read: `entity_ids[]=<id>`,
/// exactly one per request.
pub const ENTITY_IDS_PARAM: &str = "entity_ids[]";

/// Whether a request label is an `/employer/*` read (the only ones that take an entity).
fn label_is_data(label: &str) -> bool {
    Product::ALL.iter().any(|product| product.as_str() == label)
}

fn decode<T: serde::de::DeserializeOwned>(
    body: Value,
    what: &str,
    request_id: Option<String>,
) -> Result<T, FinchError> {
    serde_json::from_value(body).map_err(|error| FinchError::Decode {
        message: format!("{what}: {error}"),
        request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>) -> FinchError {
        FinchError::Api {
            status,
            name: None,
            finch_code: code.map(str::to_owned),
            message: String::new(),
            request_id: None,
            retry_after: None,
        }
    }

    #[test]
    fn errors_are_classified_as_the_docs_ask() {
        assert_eq!(api(202, Some("pending")).class(), ErrorClass::Retry);
        assert_eq!(
            api(429, Some("finch_application_rl")).class(),
            ErrorClass::Retry
        );
        assert_eq!(api(500, None).class(), ErrorClass::Retry);
        assert_eq!(
            api(502, Some("upstream_provider_error")).class(),
            ErrorClass::Retry
        );
        assert_eq!(api(408, None).class(), ErrorClass::Retry);
        assert_eq!(
            api(401, Some("reauthenticate_user")).class(),
            ErrorClass::Reauthenticate
        );
        assert_eq!(api(401, None).class(), ErrorClass::Client);
        assert_eq!(api(404, Some("item_not_found")).class(), ErrorClass::Client);
        assert_eq!(
            FinchError::Transport {
                message: "timed out".into()
            }
            .class(),
            ErrorClass::Retry
        );
    }

    #[test]
    fn a_token_grant_never_shows_its_token() {
        let grant = TokenGrant {
            access_token: SecretString::from("secret-token"),
            connection_id: Some("c1".into()),
        };
        assert!(!format!("{grant:?}").contains("secret-token"));
    }
}
