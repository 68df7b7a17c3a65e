//! The agent's logger: `env_logger` (RUST_LOG, `warn` by default), plus one translation.
//!
//! The HTTP/2 layer under the gRPC server refuses a request whose `:authority` is not a host
//! (grpcio and grpc-java send the Unix socket's path there) with a stream reset, and says why
//! only in a debug message. This logger watches for that message, whatever the log level, and
//! turns it into a warning that names the fix, at most once a minute.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use log::{LevelFilter, Log, Metadata, Record};

/// Where the HTTP/2 server logs the refusal, and how it starts.
const H2_SERVER: &str = "h2::server";
const MALFORMED_AUTHORITY: &str = "malformed authority";
const WARN_EVERY: Duration = Duration::from_secs(60);

struct Logger {
    inner: env_logger::Logger,
    /// When the last refusal warning went out, and refusals since then.
    refused: Mutex<(Option<Instant>, u64)>,
}

/// Installs the logger; call once, first thing.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).build();
    // The HTTP/2 layer's debug messages must reach `log` for the translation.
    let max = inner.filter().max(LevelFilter::Debug);
    let logger = Logger {
        inner,
        refused: Mutex::new((None, 0)),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata) || metadata.target().starts_with(H2_SERVER)
    }

    fn log(&self, record: &Record) {
        if record.target().starts_with(H2_SERVER) {
            let text = record.args().to_string();
            if text.contains(MALFORMED_AUTHORITY) {
                self.refused_authority(&text);
            }
        }
        if self.inner.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

impl Logger {
    fn refused_authority(&self, detail: &str) {
        let mut refused = self.refused.lock().unwrap();
        refused.1 += 1;
        if refused.0.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        let count = std::mem::take(&mut refused.1);
        refused.0 = Some(Instant::now());
        drop(refused);
        log::warn!(
            target: "sensor::grpc",
            "refused {count} gRPC call(s) whose HTTP/2 :authority is not a host name ({detail}): \
             grpcio and grpc-java send the Unix socket's path there; set the client's authority \
             to localhost (grpcio: channel option grpc.default_authority=localhost; grpc-java: \
             overrideAuthority(\"localhost\"); grpcurl: -authority localhost)"
        );
    }
}
