//! The workloads: what a node owner runs, each bounded by a count or a duration, traffic only on
//! loopback and between the bench's own containers. Each reports one figure measured by the tool
//! itself (dd's own elapsed time, wrk's rate, ping's own time), so `docker exec` start-up is not
//! in it.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::fixture::{BIG_FILE, Fixture, HOST_NGINX, SMALL_PAGE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Host,
    Container,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `dd` with 1-byte blocks: two syscalls per byte, the worst case of syscall hooks.
    Dd,
    /// nginx serving 2 KiB over keep-alive connections to `wrk -t1 -c16`.
    Nginx,
    /// A new TCP connection per request (`Connection: close`): connect/accept storm.
    Connect,
    /// fork + exec of `/bin/true` from a shell loop.
    Exec,
    /// `ping -f` to the bridge gateway, a bounded count.
    Icmp,
    /// One connection downloading a 64 MiB file again and again.
    Bulk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: Kind,
    pub place: Place,
}

/// Every workload, in the order the bench runs and reports them.
pub const ALL: [Workload; 10] = {
    use Kind::*;
    use Place::*;
    const fn w(kind: Kind, place: Place) -> Workload {
        Workload { kind, place }
    }
    [
        w(Dd, Host),
        w(Dd, Container),
        w(Nginx, Host),
        w(Nginx, Container),
        w(Connect, Host),
        w(Connect, Container),
        w(Exec, Host),
        w(Exec, Container),
        w(Icmp, Container),
        w(Bulk, Container),
    ]
};

/// How much work each workload does.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub dd_bytes: u64,
    /// How long each `wrk` run lasts. 5 s in a full run: with 2 s, one round's connect-storm
    /// ratio ranged over 0.92-1.36 (a hiccup of the machine weighs on a short run); with 5 s,
    /// over 1.06-1.22.
    pub wrk_seconds: u64,
    pub execs: u64,
    pub pings: u64,
}

impl Size {
    pub const FULL: Size = Size {
        dd_bytes: 2_000_000,
        wrk_seconds: 5,
        execs: 2000,
        pings: 200_000,
    };
    pub const QUICK: Size = Size {
        dd_bytes: 1_000_000,
        wrk_seconds: 1,
        execs: 500,
        pings: 50_000,
    };
}

/// What a run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Seconds (for [`Workload::is_rate`] false) or a rate per second.
    pub value: f64,
    /// wrk's 99th percentile latency, in ms.
    pub p99_ms: Option<f64>,
}

impl Workload {
    /// The name `--workload` takes: `dd-host`, `connect-container`, ...
    pub fn name(self) -> String {
        let kind = match self.kind {
            Kind::Dd => "dd",
            Kind::Nginx => "nginx",
            Kind::Connect => "connect",
            Kind::Exec => "exec",
            Kind::Icmp => "icmp",
            Kind::Bulk => "bulk",
        };
        let place = match self.place {
            Place::Host => "host",
            Place::Container => "container",
        };
        format!("{kind}-{place}")
    }

    pub fn label(self, size: Size) -> String {
        let what = match self.kind {
            Kind::Dd => format!("dd {} 1-byte blocks", size.dd_bytes),
            Kind::Nginx => format!("nginx 2 KiB, wrk -c16 keep-alive, {} s", size.wrk_seconds),
            Kind::Connect => format!(
                "TCP connect/accept storm (nginx, Connection: close), {} s",
                size.wrk_seconds
            ),
            Kind::Exec => format!("exec storm, {} × /bin/true", size.execs),
            Kind::Icmp => format!("ICMP echo flood, {} pings to the gateway", size.pings),
            Kind::Bulk => format!(
                "bulk TCP, 64 MiB file over one connection, {} s",
                size.wrk_seconds
            ),
        };
        let place = match (self.kind, self.place) {
            (Kind::Nginx | Kind::Connect | Kind::Bulk, Place::Container) => {
                "container to container"
            }
            (_, Place::Container) => "in a container",
            (Kind::Nginx | Kind::Connect, Place::Host) => "host loopback",
            (_, Place::Host) => "host",
        };
        format!("{what} ({place})")
    }

    /// True when the figure is a rate (higher is better), false for a duration.
    pub fn is_rate(self) -> bool {
        matches!(self.kind, Kind::Nginx | Kind::Connect | Kind::Bulk)
    }

    pub fn unit(self) -> &'static str {
        match self.kind {
            Kind::Nginx | Kind::Connect => "req/s",
            Kind::Bulk => "MB/s",
            _ => "s",
        }
    }

    /// The sensor's target cost ratio, and how the issue states it.
    pub fn target(self) -> (f64, &'static str) {
        match self.kind {
            Kind::Exec | Kind::Connect => (1.05, "<= 1.05"),
            Kind::Bulk => (1.0 / 0.98, "throughput >= 0.98"),
            _ => (1.02, "<= 1.02"),
        }
    }

    pub fn run(self, fx: &Fixture, size: Size) -> Result<Measurement> {
        let on = |args: &[&str]| -> Command {
            match self.place {
                Place::Host => {
                    let mut c = Command::new(args[0]);
                    c.args(&args[1..]);
                    c
                }
                Place::Container => fx.client.exec(args),
            }
        };
        let time = |value| Measurement {
            value,
            p99_ms: None,
        };
        match self.kind {
            Kind::Dd => {
                let count = format!("count={}", size.dd_bytes);
                let out = output(on(&["dd", "if=/dev/zero", "of=/dev/null", "bs=1", &count]))?;
                Ok(time(parse_dd_seconds(&out)?))
            }
            Kind::Nginx | Kind::Connect | Kind::Bulk => {
                let url = match (self.place, self.kind) {
                    (Place::Host, _) => format!("http://{HOST_NGINX}/{SMALL_PAGE}"),
                    (Place::Container, Kind::Bulk) => fx.server_url(BIG_FILE),
                    (Place::Container, _) => fx.server_url(SMALL_PAGE),
                };
                let duration = format!("{}s", size.wrk_seconds);
                let conns = if self.kind == Kind::Bulk {
                    "-c1"
                } else {
                    "-c16"
                };
                let mut args = vec!["wrk", "-t1", conns, "-d", &duration, "--latency"];
                if self.kind == Kind::Connect {
                    args.extend(["-H", "Connection: close"]);
                }
                args.push(&url);
                let wrk = parse_wrk(&output(on(&args))?)?;
                Ok(Measurement {
                    value: if self.kind == Kind::Bulk {
                        wrk.bytes_per_sec / 1e6
                    } else {
                        wrk.requests_per_sec
                    },
                    p99_ms: (self.kind == Kind::Nginx).then_some(wrk.p99_ms),
                })
            }
            Kind::Exec => {
                let script = format!(
                    "i=0; while [ $i -lt {} ]; do /bin/true; i=$((i+1)); done",
                    size.execs
                );
                match self.place {
                    Place::Host => {
                        let started = Instant::now();
                        output(on(&["/bin/dash", "-c", &script]))?;
                        Ok(time(started.elapsed().as_secs_f64()))
                    }
                    // busybox `time` execs the shell and reports its wall time.
                    Place::Container => {
                        let out = output(on(&["time", "-p", "sh", "-c", &script]))?;
                        Ok(time(parse_time_real(&out)?))
                    }
                }
            }
            Kind::Icmp => {
                let count = size.pings.to_string();
                let deadline = Duration::from_secs(60).as_secs().to_string();
                let out = output(on(&[
                    "ping",
                    "-f",
                    "-q",
                    "-c",
                    &count,
                    "-w",
                    &deadline,
                    &fx.gateway,
                ]))?;
                Ok(time(parse_ping_seconds(&out, size.pings)?))
            }
        }
    }
}

/// stdout and stderr together (the tools print their figures on either) of a command that must
/// succeed.
fn output(mut cmd: Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", crate::util::display(&cmd)))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            crate::util::display(&cmd),
            out.status,
            text.trim()
        );
    }
    Ok(text)
}

/// dd's own elapsed time: "2000000 bytes (2.0 MB, 1.9 MiB) copied, 1.23 s, 1.6 MB/s".
fn parse_dd_seconds(out: &str) -> Result<f64> {
    out.split("copied, ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no elapsed time in dd's output: {out}"))
}

/// busybox `time -p`: "real 3.21".
fn parse_time_real(out: &str) -> Result<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("real "))
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("no `real` line in time's output: {out}"))
}

/// ping's summary: "N packets transmitted, N received, 0% packet loss, time 1234ms". Fails when
/// fewer than 99% came back (the figure would then measure timeouts).
fn parse_ping_seconds(out: &str, sent: u64) -> Result<f64> {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no summary in ping's output: {out}"))?;
    let received: u64 = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no received count in `{line}`"))?;
    if received * 100 < sent * 99 {
        bail!("only {received} of {sent} pings were answered: `{line}`");
    }
    let ms: f64 = line
        .rsplit("time ")
        .next()
        .and_then(|t| t.trim().strip_suffix("ms"))
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("no time in `{line}`"))?;
    Ok(ms / 1e3)
}

struct Wrk {
    requests_per_sec: f64,
    bytes_per_sec: f64,
    p99_ms: f64,
}

/// wrk's "Requests/sec:", "Transfer/sec:" and the `--latency` 99% line. Socket errors or non-2xx
/// answers fail the run: they would make the rate measure something else.
fn parse_wrk(out: &str) -> Result<Wrk> {
    if let Some(l) = out
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        bail!("wrk saw errors (`{}`): {out}", l.trim());
    }
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("no `{name}` in wrk's output: {out}"))
    };
    let requests_per_sec = field("Requests/sec:")?
        .parse()
        .context("wrk's Requests/sec")?;
    // wrk's byte units are binary (1 KB = 1024 B).
    let bytes_per_sec = with_unit(
        field("Transfer/sec:")?,
        &[
            ("GB", 1_073_741_824.0),
            ("MB", 1_048_576.0),
            ("KB", 1024.0),
            ("B", 1.0),
        ],
    )
    .map(|(v, mult)| v * mult)
    .context("wrk's Transfer/sec")?;
    let p99_ms = with_unit(field("99%")?, &[("ms", 1.0), ("us", 1e-3), ("s", 1e3)])
        .map(|(v, mult)| v * mult)
        .context("wrk's 99% latency")?;
    Ok(Wrk {
        requests_per_sec,
        bytes_per_sec,
        p99_ms,
    })
}

/// "1.23GB" -> (1.23, multiplier of GB); units are tried in order.
fn with_unit(text: &str, units: &[(&str, f64)]) -> Option<(f64, f64)> {
    units.iter().find_map(|(unit, mult)| {
        let v: f64 = text.strip_suffix(unit)?.parse().ok()?;
        Some((v, *mult))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_outputs_parse() {
        let dd = "2000000+0 records in\n2000000+0 records out\n\
                  2000000 bytes (2.0 MB, 1.9 MiB) copied, 1.61803 s, 1.2 MB/s\n";
        assert_eq!(parse_dd_seconds(dd).unwrap(), 1.61803);
        assert_eq!(
            parse_time_real("real 3.21\nuser 0.10\nsys 1.00\n").unwrap(),
            3.21
        );
        let ping = "--- 172.17.0.1 ping statistics ---\n\
                    20000 packets transmitted, 20000 received, 0% packet loss, time 1234ms\n\
                    rtt min/avg/max/mdev = 0.010/0.020/0.300/0.010 ms, ipg/ewma 0.061/0.019 ms\n";
        assert_eq!(parse_ping_seconds(ping, 20000).unwrap(), 1.234);
        assert!(
            parse_ping_seconds(&ping.replace(", 20000 received", ", 100 received"), 20000).is_err()
        );
        let wrk = "Running 3s test @ http://127.0.0.1:18080/small.html\n  1 threads and 16 connections\n\
                   Latency Distribution\n     50%  300.00us\n     99%    1.50ms\n\
                   91234 requests in 3.00s, 200.00MB read\nRequests/sec:  30411.33\nTransfer/sec:     66.67MB\n";
        let w = parse_wrk(wrk).unwrap();
        assert_eq!(w.requests_per_sec, 30411.33);
        assert_eq!(w.p99_ms, 1.5);
        assert!((w.bytes_per_sec - 66.67 * 1024.0 * 1024.0).abs() < 1.0);
        assert!(
            parse_wrk(&format!(
                "{wrk}  Socket errors: connect 0, read 3, write 0, timeout 0\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<String> = ALL.iter().map(|w| w.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
