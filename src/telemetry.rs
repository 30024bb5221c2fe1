//! Logging and distributed tracing for every subcommand.
//!
//! Logs go to stderr (text or JSON). Traces are exported over OTLP/HTTP only
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is
//! set; the standard `OTEL_*` variables configure the exporter and resource.
//! The W3C `traceparent` of an event travels in its AMQP headers, so the
//! worker's span continues the ingress's trace.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The `service.name` traces carry unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "finch-webhooks";

/// Header carrying the W3C trace context in AMQP messages.
pub const TRACEPARENT: &str = "traceparent";

/// Kept so that [`shutdown`] can flush spans still in the batch exporter.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` picks levels; `info` otherwise.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let traces = otlp_provider().map(|provider| {
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME));
        PROVIDER.set(provider).ok();
        layer
    });
    // A second init (tests build many applications) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
}

/// A tracing layer that sends spans to `provider`, for tests that collect
/// spans in memory instead of exporting them.
pub fn layer_for(provider: &SdkTracerProvider) -> impl Layer<Registry> + Send + Sync {
    tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME))
}

fn exporting_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn otlp_provider() -> Option<SdkTracerProvider> {
    if !exporting_configured() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("finch-webhooks: OpenTelemetry export disabled: {error}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// Flushes buffered spans before the process exits.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown() {
            eprintln!("finch-webhooks: flushing traces failed: {error}");
        }
    }
}

/// The W3C `traceparent` of `span`, when it belongs to a sampled trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the trace a `traceparent` names (from a message
/// header); a missing or invalid value leaves `span` a new root.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(context) = remote_context(traceparent) {
        span.set_parent(context).ok();
    }
}

/// Links `span` to the trace a `traceparent` names without making it a child,
/// for work that belongs to a later, separate trace (a replay, a batch).
pub fn link_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(context) = remote_context(traceparent) {
        span.add_link(context.span().span_context().clone());
    }
}

/// Links `span` to another local span's trace (a batch serving many events).
pub fn link_span(span: &tracing::Span, other: &tracing::Span) {
    let context = other.context();
    let other = context.span().span_context().clone();
    if other.is_valid() {
        span.add_link(other);
    }
}

fn remote_context(traceparent: Option<&str>) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent?.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// An error and its causes on one line, `outer: cause: root`: how errors are
/// logged and shown to an operator. Each of our errors names only its own
/// part, so the message alone would lose the cause. Some libraries (sqlx)
/// repeat their cause in their own message as well; a cause that the line
/// already ends with is not written again.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut written = self.0.to_string();
        f.write_str(&written)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let message = error.to_string();
            if !written.ends_with(&message) {
                write!(f, ": {message}")?;
                written = message;
            }
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorChain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the ledger")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_written_once_even_when_a_library_repeats_it() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let ours = Outer(refused());
        assert_eq!(ErrorChain(&ours).to_string(), "reading the ledger: refused");
        // sqlx prints its cause in its own message and returns it as the source too.
        let echoing = crate::store::StoreError::from(sqlx::Error::Io(refused()));
        assert_eq!(
            ErrorChain(&echoing).to_string(),
            "database unavailable: error communicating with database: refused"
        );
    }
}
