//! Logging through `tracing`: pretty for people, JSON lines for machines; and the
//! Prometheus metrics in [`metrics`].

pub mod metrics;

use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber; `directives` (`RUST_LOG`, already checked) filter.
/// Events also go to the dashboard's log stream ([`crate::board::log_layer`]).
pub fn init(format: LogFormat, directives: &str) {
    let filter = || EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = fmt::layer().with_writer(std::io::stderr);
    let stderr = match format {
        LogFormat::Pretty => stderr.boxed(),
        LogFormat::Json => stderr
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr.with_filter(filter()))
        .with(crate::board::log_layer().with_filter(filter()))
        .try_init();
}
