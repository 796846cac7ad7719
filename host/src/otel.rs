//! OpenTelemetry export of the host's spans (the per-attempt trace of
//! `jobs::traces`, and every other span), behind the off-by-default `otel`
//! cargo feature: `cargo build --release -p hodei --features otel`.
//!
//! Spans leave over OTLP/HTTP (protobuf) to the collector that
//! `OTEL_EXPORTER_OTLP_ENDPOINT` names (e.g. `http://127.0.0.1:4318`);
//! without it nothing is exported and the layer is not installed. The
//! service name is `hodei`. The level the layer sees is the one
//! `RUST_LOG` sets: `hodei::jobs::traces=debug` turns the job traces on.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The environment variable naming the collector.
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The export layer and the provider to shut down (which flushes) at exit,
/// or `None` when no collector is configured.
pub fn layer<S>() -> anyhow::Result<Option<(impl Layer<S>, SdkTracerProvider)>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let Ok(base) = std::env::var(ENDPOINT) else {
        return Ok(None);
    };
    let endpoint = format!("{}/v1/traces", base.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("hodei").build())
        .build();
    let tracer = provider.tracer("hodei");
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        provider,
    )))
}
