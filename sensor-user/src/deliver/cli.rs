//! Command-line flags of the delivery layer: those `sensor run` takes ([`DeliveryArgs`]) and
//! the `sensor watch` client's ([`WatchArgs`]).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Result, bail};
use sensor_proto::Severity;

use super::{
    DeliveryConfig, TcpTlsConfig,
    spool::{FsyncPolicy, SpoolConfig},
    watch::{ClientTls, Output, WatchOptions},
};

#[derive(clap::Args, Clone, Debug)]
pub struct DeliveryArgs {
    /// Unix socket of the gRPC API (created mode 0600, root only).
    #[arg(long, value_name = "PATH", default_value = DeliveryConfig::DEFAULT_SOCKET)]
    pub grpc_socket: PathBuf,
    /// Also serve the gRPC API on TCP, with mutual TLS only (needs --tls-cert, --tls-key,
    /// --tls-client-ca).
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key", "tls_client_ca"])]
    pub grpc_tcp: Option<SocketAddr>,
    /// Server certificate (PEM) for --grpc-tcp.
    #[arg(long, value_name = "PEM", requires = "grpc_tcp")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM) for --grpc-tcp.
    #[arg(long, value_name = "PEM", requires = "grpc_tcp")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to; clients without one are refused.
    #[arg(long, value_name = "PEM", requires = "grpc_tcp")]
    pub tls_client_ca: Option<PathBuf>,
    /// Directory of the on-disk alert spool.
    #[arg(long, value_name = "DIR", default_value = SpoolConfig::DEFAULT_DIR)]
    pub spool_dir: PathBuf,
    /// Size bound of the alert spool in MiB; the oldest alerts are evicted (and counted) beyond it.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub spool_max_mb: u64,
    /// fsync the spool after every alert (`always`), or leave it to the kernel (`never`: survives a
    /// crash of the agent, not of the machine).
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = ["always", "never"])]
    pub spool_fsync: String,
    /// Push alerts to this OpenTelemetry collector (OTLP/gRPC logs), e.g. http://127.0.0.1:4317,
    /// or https://collector:4317 with --otlp-ca.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// CA (PEM) the https:// collector's certificate must chain to.
    #[arg(long, value_name = "PEM", requires = "otlp_endpoint")]
    pub otlp_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a collector that asks for one (mutual TLS).
    #[arg(long, value_name = "PEM", requires_all = ["otlp_key", "otlp_ca"])]
    pub otlp_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "otlp_cert")]
    pub otlp_key: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (off by default), e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl DeliveryArgs {
    pub fn config(self, node: &str) -> DeliveryConfig {
        let mut cfg = DeliveryConfig::new(node);
        cfg.grpc_socket = self.grpc_socket;
        // clap's `requires_all` guarantees the three files come with the address.
        cfg.grpc_tcp = match (
            self.grpc_tcp,
            self.tls_cert,
            self.tls_key,
            self.tls_client_ca,
        ) {
            (Some(addr), Some(cert), Some(key), Some(client_ca)) => Some(TcpTlsConfig {
                addr,
                cert,
                key,
                client_ca,
            }),
            _ => None,
        };
        cfg.spool = SpoolConfig {
            dir: self.spool_dir,
            max_bytes: self.spool_max_mb << 20,
            fsync: if self.spool_fsync == "never" {
                FsyncPolicy::Never
            } else {
                FsyncPolicy::Always
            },
        };
        cfg.otlp_endpoint = self.otlp_endpoint;
        cfg.otlp_tls = super::otlp::OtlpTls {
            ca: self.otlp_ca,
            identity: self.otlp_cert.zip(self.otlp_key),
        };
        cfg.metrics_addr = self.metrics_addr;
        cfg
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct WatchArgs {
    /// The agent: unix:///run/sensor/sensor.sock (default), a socket path, or https://HOST:PORT.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "unix:///run/sensor/sensor.sock"
    )]
    pub addr: String,
    /// Only alerts of this rule id (repeatable).
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
    /// Only alerts of at least this severity: info, low, medium, high, critical.
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub severity: Option<Severity>,
    /// Only this container: its full id or a prefix of at least 4 characters (repeatable).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,
    /// Only events of this kind, or alerts triggered by one (repeatable): exec, exit, ...
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Stream events instead of alerts.
    #[arg(long, conflicts_with_all = ["since", "rules", "severity"])]
    pub events: bool,
    /// Replay the spooled alerts after this sequence number (0: all), then continue live.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Output: compact (one line per item) or json (JSON lines).
    #[arg(short = 'o', long, value_enum, default_value = "compact")]
    pub output: Output,
    /// CA (PEM) to verify an https:// agent with.
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for an https:// agent.
    #[arg(long, value_name = "PEM", requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for an https:// agent.
    #[arg(long, value_name = "PEM", requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s)
        .ok_or_else(|| format!("`{s}` is not a severity: use info, low, medium, high or critical"))
}

impl WatchArgs {
    pub fn options(self) -> Result<WatchOptions> {
        let tls = match (self.tls_ca, self.tls_cert, self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(ClientTls { ca, cert, key }),
            (None, None, None) => None,
            _ => bail!("--tls-ca, --tls-cert and --tls-key go together"),
        };
        Ok(WatchOptions {
            addr: self.addr,
            rules: self.rules,
            min_severity: self.severity,
            containers: self.containers,
            kinds: self.kinds,
            events: self.events,
            since: self.since,
            output: self.output,
            tls,
        })
    }

    /// Runs `sensor watch` to its end (an error when the stream ends or cannot start).
    pub fn run(self) -> Result<()> {
        let opts = self.options()?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                tokio::select! {
                    r = super::watch::run(opts) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })
    }
}
