//! The ways a workload runs: with nothing traced, with the syscall-path floor, with a bpftrace
//! peer, with our sensor, and (`--baseline PATH`) with another build of the agent to compare a
//! change against in the same interleaved rounds. [`Mode::start`] returns an [`Active`] mode
//! that is stopped (and, for an agent, read out) by [`Active::stop`] or, on an error, by drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::report::SensorRun;
use crate::{latency::proto_u64, util};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    None,
    Floor,
    Peer,
    Sensor,
    /// Another build of the agent (`--baseline PATH`), run exactly as [`Mode::Sensor`].
    Baseline,
}

/// The round-robin order of every round.
pub const ALL: [Mode; 5] = [
    Mode::None,
    Mode::Floor,
    Mode::Peer,
    Mode::Sensor,
    Mode::Baseline,
];

/// One empty program on a syscall tracepoint nothing in the bench calls: the cost of the
/// syscall slow path alone (every task on the node takes it while any syscall tracepoint is on).
const FLOOR_SCRIPT: &str = r#"tracepoint:syscalls:sys_enter_setns { }
BEGIN { printf("bench: attached\n"); }"#;

/// What a syscall-tracing peer captures for the same detections: exec with arguments, connect,
/// accept, and the datagram calls ICMP goes through, printed for the whole node.
const PEER_SCRIPT: &str = r#"
BEGIN { printf("bench: attached\n"); }
tracepoint:syscalls:sys_enter_execve { printf("%d %s exec ", pid, comm); join(args->argv); }
tracepoint:syscalls:sys_enter_connect { printf("%d %s connect fd %d\n", pid, comm, args->fd); }
tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept /args->ret >= 0/ {
  printf("%d %s accept fd %d\n", pid, comm, args->ret);
}
tracepoint:syscalls:sys_enter_sendto { printf("%d %s sendto %d bytes\n", pid, comm, args->len); }
tracepoint:syscalls:sys_exit_recvmsg /args->ret > 0/ { printf("%d %s recvmsg %d\n", pid, comm, args->ret); }
"#;

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Floor => "floor",
            Mode::Peer => "peer",
            Mode::Sensor => "sensor",
            Mode::Baseline => "baseline",
        }
    }

    /// The mode `--mode` names (every one but `none`, which always runs).
    pub fn parse(name: &str) -> Result<Mode> {
        ALL.into_iter()
            .skip(1)
            .find(|m| m.name() == name)
            .with_context(|| {
                let known: Vec<&str> = ALL[1..].iter().map(|m| m.name()).collect();
                format!("unknown mode `{name}`; the modes are {}", known.join(", "))
            })
    }

    /// Whether the mode runs an agent (ours or the baseline build).
    pub fn is_agent(self) -> bool {
        matches!(self, Mode::Sensor | Mode::Baseline)
    }

    /// Starts the mode and waits until its hooks are attached.
    pub fn start(self, paths: &Paths) -> Result<Active> {
        self.start_with(paths, &[])
    }

    /// [`Mode::start`], with `sensor_args` added to `sensor run`.
    pub fn start_with(self, paths: &Paths, sensor_args: &[&str]) -> Result<Active> {
        let log = paths.dir.join(format!("{}.log", self.name()));
        let child = match self {
            Mode::None => None,
            Mode::Floor | Mode::Peer => {
                let script = if self == Mode::Floor {
                    FLOOR_SCRIPT
                } else {
                    PEER_SCRIPT
                };
                let out = fs::File::create(&log)?;
                let child = Command::new("bpftrace")
                    .args(["-B", "line", "-e", script])
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .spawn()
                    .context("could not start bpftrace (`cargo xtask setup --for bench`)")?;
                Some(child)
            }
            Mode::Sensor | Mode::Baseline => {
                let _ = fs::remove_file(&paths.events);
                let agent = match (self, &paths.baseline) {
                    (Mode::Baseline, Some(baseline)) => baseline,
                    (Mode::Baseline, None) => bail!("the baseline mode needs --baseline PATH"),
                    _ => &paths.sensor,
                };
                let child = Command::new(agent)
                    .arg("run")
                    .arg("--json-out")
                    .arg(&paths.events)
                    .arg("--grpc-socket")
                    .arg(&paths.socket)
                    .arg("--spool-dir")
                    .arg(paths.dir.join("spool"))
                    .args(sensor_args)
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(&log)?)
                    .spawn()
                    .with_context(|| format!("starting {}", agent.display()))?;
                Some(child)
            }
        };
        let mut active = Active {
            mode: self,
            child,
            log,
            events: paths.events.clone(),
        };
        let ready = match self {
            Mode::None => return Ok(active),
            Mode::Floor | Mode::Peer => "bench: attached",
            Mode::Sensor | Mode::Baseline => "ready in",
        };
        let started = Instant::now();
        loop {
            let text = fs::read_to_string(&active.log).unwrap_or_default();
            if text.contains(ready) {
                return Ok(active);
            }
            let child = active.child.as_mut().expect("traced modes have a process");
            if let Some(status) = child.try_wait()? {
                active.child = None;
                bail!(
                    "{} exited during start-up ({status}): {}",
                    self.name(),
                    tail(&text)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not attach within {START_TIMEOUT:?}: {}",
                    self.name(),
                    tail(&text)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Where the modes keep their files.
pub struct Paths {
    pub dir: PathBuf,
    pub sensor: PathBuf,
    /// The agent [`Mode::Baseline`] runs.
    pub baseline: Option<PathBuf>,
    pub events: PathBuf,
    pub socket: PathBuf,
}

/// A started mode.
pub struct Active {
    mode: Mode,
    child: Option<Child>,
    log: PathBuf,
    events: PathBuf,
}

impl Active {
    /// The mode's process, if it has one.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log (bpftrace's output, or the sensor's stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// How its process ended, if it has ended already.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// The agent's CPU time so far (user + system, all threads); `None` in other modes.
    pub fn sensor_cpu_seconds(&self) -> Option<f64> {
        if !self.mode.is_agent() {
            return None;
        }
        cpu_seconds(self.child.as_ref()?.id())
    }

    /// Stops the mode as Ctrl-C would; for the sensor, what it reported.
    pub fn stop(mut self, what: &str) -> Result<Option<SensorRun>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = child.id();
        let cpu = cpu_seconds(pid).unwrap_or(0.0);
        let peak_rss_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
        util::signal(pid.into(), "INT");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                bail!("{} did not stop within {STOP_TIMEOUT:?}", self.mode.name());
            }
            thread::sleep(Duration::from_millis(50));
        };
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        // bpftrace ends with 130 on SIGINT; the agent with success.
        if !self.mode.is_agent() {
            return Ok(None);
        }
        if !status.success() {
            bail!(
                "the {} exited with {status}: {}",
                self.mode.name(),
                tail(&log)
            );
        }
        let mut run = sensor_report(&self.events)?;
        run.what = match self.mode {
            Mode::Baseline => format!("{what} (baseline)"),
            _ => what.to_string(),
        };
        run.cpu_seconds = cpu;
        run.peak_rss_kib = peak_rss_kib;
        run.ready_line = log
            .lines()
            .find(|l| l.contains("ready in"))
            .unwrap_or_default()
            .to_string();
        Ok(Some(run))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// utime + stime of a process, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks())
}

/// Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK`, asked once.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        util::output_ok(Command::new("getconf").arg("CLK_TCK"))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `kB` field of `/proc/PID/status` (`VmHWM:`, `VmRSS:`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The counters of the sensor's last health event (written as it stopped).
fn sensor_report(events: &Path) -> Result<SensorRun> {
    let text = fs::read_to_string(events)
        .with_context(|| format!("reading the sensor's output {}", events.display()))?;
    // Alerts embed their triggering events, health events among them (CRS-011): only a
    // top-level health event counts.
    let health: Value = text
        .lines()
        .rev()
        .filter(|l| l.starts_with("{\"kind\":\"health\""))
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "health")
        .context("the sensor wrote no health event")?;
    let h = &health["health"];
    let num = |v: &Value| proto_u64(v).unwrap_or(0);
    let drops = h["rings"]
        .as_array()
        .map(|rings| {
            rings
                .iter()
                .map(|r| {
                    (
                        r["ring"].as_str().unwrap_or("?").to_string(),
                        num(&r["dropped_ring_full"]),
                        num(&r["dropped_rate_limited"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(SensorRun {
        what: String::new(),
        rounds: 1,
        seconds: 0.0,
        cpu_seconds: 0.0,
        peak_rss_kib: 0,
        events: text.lines().count() as u64,
        drops,
        decode_errors: num(&h["decode_errors"]),
        subscriber_missed: None,
        ready_line: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "1234 (tokio rt) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}
