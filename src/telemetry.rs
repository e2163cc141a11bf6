//! Telemetry: logs on stderr as text or JSON lines, filtered like RUST_LOG, and — when an
//! endpoint is configured — OpenTelemetry traces exported over OTLP/HTTP (one span per rule
//! run, with its rule, outcome, rows and duration).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Keeps the trace pipeline alive; dropping it flushes the spans not yet exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: could not flush traces: {e}");
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"))
}

/// Colours only for a person at a terminal, and never when `NO_COLOR` is set (no-color.org).
fn ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Text logs on stderr, for the one-shot commands.
pub fn init(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_ansi(ansi())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The traces endpoint for an OTLP/HTTP base URL (`http://collector:4318` →
/// `http://collector:4318/v1/traces`), as the OpenTelemetry specification derives it.
pub fn traces_endpoint(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Logs in `format`, and traces to `otlp_endpoint` when given, for the daemon.
pub fn init_daemon(
    level: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Telemetry> {
    let provider = match otlp_endpoint {
        None => None,
        Some(base) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_endpoint(base))
                .build()
                .map_err(|e| anyhow::anyhow!("cannot set up the OTLP exporter: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("invariantd")
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("invariantd"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("invariantd", tracing::Level::INFO),
            )
    });
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi())
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    use tracing_subscriber::Layer as _;
    tracing_subscriber::registry()
        .with(text.with_filter(filter(level)))
        .with(json.with_filter(filter(level)))
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    #[test]
    fn traces_endpoint_follows_the_otlp_convention() {
        assert_eq!(
            super::traces_endpoint("http://c:4318"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            super::traces_endpoint("http://c:4318/"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            super::traces_endpoint("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
