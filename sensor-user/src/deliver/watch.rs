//! `sensor watch`: the command-line client of the `sensor.v1.Sensor` service.
//!
//! Streams alerts (or, with `--events`, events) from a running agent, over its Unix socket or over
//! TCP with mutual TLS, and prints them: `-o compact` one line per item for a person, `-o json`
//! one `WatchAlertsResponse`/`WatchEventsResponse` per line (proto3 JSON) for a machine. Missed
//! items are always reported, on stdout in the chosen format and on stderr. An alert stream that
//! breaks is resumed from the spool after the last alert seen (`since_seq`), so a sensor restart
//! costs a person watching nothing.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use sensor_proto::{
    self as pb, Alert, Event, Missed, Severity, sensor_client::SensorClient, watch_alerts_response,
    watch_events_response,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One human-readable line per item.
    Compact,
    /// One JSON object per line: the stream's response message in its proto3 JSON mapping.
    Json,
}

/// Client certificate and the CA to check the server with, for `https://` addresses.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// `unix:///run/sensor/sensor.sock`, a socket path, or `https://host:port`.
    pub addr: String,
    pub rules: Vec<String>,
    pub min_severity: Option<Severity>,
    pub containers: Vec<String>,
    pub kinds: Vec<String>,
    pub events: bool,
    pub since: Option<u64>,
    pub output: Output,
    pub tls: Option<ClientTls>,
}

/// Connects to the agent at `addr`.
pub async fn connect(addr: &str, tls: Option<&ClientTls>) -> Result<Channel> {
    if addr.starts_with("https://") {
        let Some(tls) = tls else {
            bail!(
                "{addr} needs mutual TLS: give --tls-ca, --tls-cert and --tls-key (the server \
                 refuses clients without a certificate)"
            )
        };
        let read = |p: &Path, flag: &str| {
            std::fs::read(p).with_context(|| format!("reading {flag} {}", p.display()))
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&tls.ca, "--tls-ca")?))
            .identity(Identity::from_pem(
                read(&tls.cert, "--tls-cert")?,
                read(&tls.key, "--tls-key")?,
            ));
        let endpoint = Endpoint::from_shared(addr.to_string())
            .with_context(|| format!("--addr {addr} is not a URI"))?
            .tls_config(config)
            .context("loading the client TLS material")?;
        return endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to the sensor at {addr}"));
    }
    if addr.starts_with("http://") {
        bail!("{addr}: the sensor serves TCP only with mutual TLS; use https://HOST:PORT");
    }
    let path = addr.strip_prefix("unix://").unwrap_or(addr);
    sensor_proto::connect_unix(path).await.with_context(|| {
        format!(
            "connecting to the sensor's socket {path} (is `sensor run` running? the socket is \
             root-only: run as root)"
        )
    })
}

pub async fn run(opts: WatchOptions) -> Result<()> {
    let channel = connect(&opts.addr, opts.tls.as_ref()).await?;
    let client = SensorClient::new(channel);
    if opts.events {
        watch_events(client, &opts).await?;
        bail!("the sensor ended the stream (it stopped?); run `sensor watch` again to reconnect")
    }
    follow_alerts(client, &opts, &mut print).await
}

/// Where printed lines go (stdout, or a test's buffer).
pub type Out<'a> = &'a mut (dyn FnMut(&str) -> Result<()> + Send);

fn print(line: &str) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{line}").context("writing to stdout")
}

async fn watch_events(mut client: SensorClient<Channel>, opts: &WatchOptions) -> Result<()> {
    let request = pb::WatchEventsRequest {
        filter: Some(pb::EventFilter {
            kinds: opts.kinds.clone(),
            container_ids: opts.containers.clone(),
            containers_only: false,
        }),
    };
    let mut stream = client
        .watch_events(request)
        .await
        .context("WatchEvents")?
        .into_inner();
    while let Some(resp) = stream.message().await.context("reading the event stream")? {
        let line = match (&resp.item, opts.output) {
            (_, Output::Json) => serde_json::to_string(&resp)?,
            (Some(watch_events_response::Item::Event(e)), _) => compact_event(e),
            (Some(watch_events_response::Item::Missed(m)), _) => compact_missed(m, "events"),
            (None, _) => continue,
        };
        if let Some(watch_events_response::Item::Missed(m)) = &resp.item {
            eprintln!("sensor watch: {}", compact_missed(m, "events"));
        }
        print(&line)?;
    }
    Ok(())
}

/// Streams alerts for ever: when the stream breaks (the sensor restarts, the network drops), it
/// reconnects and resumes after the last sequence number it has accounted for, so nothing still
/// in the spool is missed or printed twice.
pub async fn follow_alerts(
    mut client: SensorClient<Channel>,
    opts: &WatchOptions,
    out: Out<'_>,
) -> Result<()> {
    if opts.since.is_none()
        && opts.output == Output::Compact
        && let Ok(rules) = client.list_rules(pb::ListRulesRequest {}).await
        && !rules.get_ref().note.is_empty()
    {
        eprintln!("sensor watch: note: {}", rules.get_ref().note);
    }
    // Where a resume starts: the given --since, else the spool's end now (live only).
    let mut resume_after = match opts.since {
        Some(seq) => seq,
        None => client
            .get_health(pb::GetHealthRequest {})
            .await
            .context("GetHealth")?
            .into_inner()
            .delivery
            .and_then(|d| d.spool)
            .map_or(0, |s| s.last_seq),
    };
    let mut since = opts.since;
    let mut backoff = Duration::from_millis(500);
    loop {
        let ended = stream_alerts(&mut client, opts, since, &mut resume_after, out).await;
        let why = match ended {
            Ok(()) => "the sensor ended the stream".to_string(),
            Err(err) => format!("{err:#}"),
        };
        eprintln!(
            "sensor watch: {why}; reconnecting in {} ms to resume after alert {resume_after}",
            backoff.as_millis()
        );
        tokio::time::sleep(backoff).await;
        match connect(&opts.addr, opts.tls.as_ref()).await {
            Ok(channel) => {
                client = SensorClient::new(channel);
                backoff = Duration::from_millis(500);
            }
            Err(err) => {
                eprintln!("sensor watch: {err:#}");
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        since = Some(resume_after);
    }
}

/// One `WatchAlerts` stream, to its end; `resume_after` follows every sequence number seen.
async fn stream_alerts(
    client: &mut SensorClient<Channel>,
    opts: &WatchOptions,
    since: Option<u64>,
    resume_after: &mut u64,
    out: Out<'_>,
) -> Result<()> {
    let request = pb::WatchAlertsRequest {
        filter: Some(pb::AlertFilter {
            rule_ids: opts.rules.clone(),
            min_severity: opts.min_severity.unwrap_or_default() as i32,
            container_ids: opts.containers.clone(),
            event_kinds: opts.kinds.clone(),
        }),
        since_seq: since,
    };
    let mut stream = client
        .watch_alerts(request)
        .await
        .context("WatchAlerts")?
        .into_inner();
    while let Some(resp) = stream.message().await.context("reading the alert stream")? {
        let line = match (&resp.item, opts.output) {
            (_, Output::Json) => serde_json::to_string(&resp)?,
            (Some(watch_alerts_response::Item::Alert(a)), _) => compact_alert(a),
            (Some(watch_alerts_response::Item::Missed(m)), _) => compact_missed(m, "alerts"),
            (None, _) => continue,
        };
        match &resp.item {
            Some(watch_alerts_response::Item::Alert(a)) => *resume_after = a.seq,
            Some(watch_alerts_response::Item::Missed(m)) => {
                eprintln!("sensor watch: {}", compact_missed(m, "alerts"));
                *resume_after = m.last_seq;
            }
            None => {}
        }
        out(&line)?;
    }
    Ok(())
}

fn time(t: Option<&pbjson_types::Timestamp>) -> String {
    t.and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn compact_alert(a: &Alert) -> String {
    let severity = Severity::try_from(a.severity).unwrap_or_default();
    let container = a.container.as_ref().map_or("-", |c| short(&c.id));
    let (pid, exe) = a
        .process
        .as_ref()
        .map_or((0, "-"), |p| (p.pid, p.exe.as_str()));
    format!(
        "{} #{} {:<8} {} container={container} pid={pid} exe={exe}: {}",
        time(a.time.as_ref()),
        a.seq,
        severity.short_name().to_ascii_uppercase(),
        a.rule_id,
        if a.summary.is_empty() {
            &a.rule_name
        } else {
            &a.summary
        }
    )
}

fn compact_event(e: &Event) -> String {
    let container = e.container.as_ref().map_or("host", |c| short(&c.id));
    let mut line = format!("{} {:<17} {container}", time(e.time.as_ref()), e.kind);
    if let Some(p) = &e.process {
        line.push_str(&format!(" pid={} {}", p.pid, p.args.join(" ")));
    }
    line
}

fn compact_missed(m: &Missed, what: &str) -> String {
    let resume = if what == "alerts" {
        format!("; resume with --since {}", m.first_seq.saturating_sub(1))
    } else {
        String::new()
    };
    format!(
        "missed {} {what} (seq {}..={}, {}){resume}",
        m.count, m.first_seq, m.last_seq, m.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lines() {
        let a = Alert {
            seq: 3,
            rule_id: "netcat-c2".into(),
            severity: Severity::High as i32,
            summary: "nc -l in container".into(),
            container: Some(pb::Container {
                id: "f".repeat(64),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            compact_alert(&a),
            "- #3 HIGH     netcat-c2 container=ffffffffffff pid=0 exe=-: nc -l in container"
        );
        let m = Missed {
            count: 2,
            first_seq: 5,
            last_seq: 6,
            reason: "evicted".into(),
        };
        assert_eq!(
            compact_missed(&m, "alerts"),
            "missed 2 alerts (seq 5..=6, evicted); resume with --since 4"
        );
    }
}
