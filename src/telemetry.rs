//! Logging and distributed tracing for every subcommand.
//!
//! Logs go to stderr (text or JSON). Traces are exported over OTLP/HTTP only
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is
//! set; the standard `OTEL_*` variables configure the exporter and resource.
//! The W3C `traceparent` of an event travels in its AMQP headers, so the
//! worker's span continues the ingress's trace.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
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
/// Text lines are [`Terse`] unless `verbose`, which adds each line's span
/// context; JSON lines and traces always carry the span fields.
pub fn init(format: LogFormat, verbose: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match (format, verbose) {
        (LogFormat::Json, _) => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        (LogFormat::Text, true) => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        (LogFormat::Text, false) => fmt::layer()
            .event_format(Terse)
            .with_writer(std::io::stderr)
            .boxed(),
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

/// Text logs for people following events on a terminal: one short line per
/// log event, `HH:MM:SS LEVEL message field=value ...`, with only the event's
/// own fields (no span context), ids named briefly (`id`, `type`, `conn`
/// with its first 8 characters), empty values left out and long values cut.
pub struct Terse;

/// Longest value a terse line shows before cutting it with `…`.
const TERSE_VALUE_MAX: usize = 100;
/// Characters of a connection id a terse line shows: enough to tell
/// connections apart by eye.
const TERSE_CONNECTION_ID: usize = 8;

impl<S, N> FormatEvent<S, N> for Terse
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = TerseFields::default();
        event.record(&mut fields);
        write!(
            writer,
            "{} {:>5} {}",
            chrono::Local::now().format("%H:%M:%S"),
            event.metadata().level(),
            fields.message
        )?;
        for (name, value) in fields.rest {
            write!(writer, " {name}={value}")?;
        }
        writeln!(writer)
    }
}

/// The message and the fields of one event, shortened for a terse line.
#[derive(Default)]
struct TerseFields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl TerseFields {
    fn push(&mut self, field: &tracing::field::Field, value: String) {
        if field.name() == "message" {
            self.message = value;
            return;
        }
        if value.is_empty() {
            return;
        }
        let (name, limit) = match field.name() {
            "event_id" => ("id", TERSE_VALUE_MAX),
            "event_type" => ("type", TERSE_VALUE_MAX),
            "connection_id" => ("conn", TERSE_CONNECTION_ID),
            name => (name, TERSE_VALUE_MAX),
        };
        let value = match value.char_indices().nth(limit) {
            Some((cut, _)) if limit == TERSE_CONNECTION_ID => value[..cut].to_owned(),
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value,
        };
        self.rest.push((name, value));
    }
}

impl tracing::field::Visit for TerseFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.push(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.push(field, format!("{value:?}"));
    }
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
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;

    use super::{ErrorChain, Terse};

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What one step's log line looks like inside a request span, terse or not.
    fn logged(terse: bool) -> String {
        let captured = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(captured.clone());
        let subscriber = if terse {
            tracing_subscriber::registry().with(layer.event_format(Terse).boxed())
        } else {
            tracing_subscriber::registry().with(layer.boxed())
        };
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "webhook",
                http.route = "/webhooks/finch",
                event_id = "msg_1"
            );
            let _entered = span.enter();
            tracing::info!(
                event_id = "msg_1",
                event_type = "company.updated",
                connection_id = "0057d3d2-fb43-4815-9f71-01ba4862d09f",
                finch_code = "",
                error = %"x".repeat(300),
                "received"
            );
        });
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn terse_lines_hold_the_event_alone_and_verbose_ones_its_spans() {
        let terse = logged(true);
        assert_eq!(terse.lines().count(), 1, "{terse}");
        let line = terse.lines().next().unwrap();
        let (_time, rest) = line.split_once(' ').unwrap();
        let expected = format!(
            " INFO received id=msg_1 type=company.updated conn=0057d3d2 error={}…",
            "x".repeat(100)
        );
        assert_eq!(rest, expected);
        assert!(!terse.contains("webhook"), "no span context: {terse}");

        let verbose = logged(false);
        assert_eq!(verbose.lines().count(), 1, "{verbose}");
        assert!(
            verbose.contains("webhook{http.route=\"/webhooks/finch\" event_id=\"msg_1\"}"),
            "span context: {verbose}"
        );
        assert!(verbose.contains("0057d3d2-fb43-4815-9f71-01ba4862d09f"));
    }

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
