//! The soak's load: container churn, many peers, rule reloads. Each part runs on its own
//! thread until the deadline and stops by itself; traffic goes only to the containers the soak
//! started (and to loopback inside the churning containers).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{docker, util};

/// The long-lived containers' names (removed before and after a soak).
const SERVER: &str = "sensor-soak-server";
const CLIENT: &str = "sensor-soak-client";
/// Concurrent churn loops.
const CHURNERS: usize = 2;
/// How often the rules change on disk; every fourth change also edits a rule's logic, and
/// every other one is followed by a SIGHUP.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// What the load did so far, read by the sampler.
#[derive(Default)]
pub struct Counts {
    pub containers: AtomicU64,
    pub container_failures: AtomicU64,
}

/// The running load; [`Load::finish`] waits for its threads.
pub struct Load {
    threads: Vec<thread::JoinHandle<()>>,
    pub counts: Arc<Counts>,
}

/// A rule that keeps state (a window per container) for the reloads to keep or reset.
fn soak_rule(generation: u64) -> String {
    let above = if (generation / 4).is_multiple_of(2) {
        3
    } else {
        4
    };
    format!(
        r#"id: SOAK-001
name: Soak rule whose exceptions and logic change while the agent runs
goal: Give the soak's reloads state to keep (unchanged logic) or reset (changed threshold).
attack: {{techniques: [T1059], tactic: Execution}}
severity: info
strategy: Counts execs per container.
blind_spots: [none]
false_positives: [none]
validation: The soak's churn.
response: [none]
logic:
  kind: threshold
  condition: evt.kind = exec and container.id exists
  key: [container.id]
  above: {above}
  window_seconds: 60
exceptions:
  - {{name: gen-{generation}, reason: edited by the soak at every reload, images: [soak/never-{generation}]}}
output: "many execs in {{container.id}}"
"#
    )
}

/// Writes the first rule file into `dir` (created mode 0700, as the agent demands).
pub fn prepare_rules(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    fs::write(dir.join("soak.yaml"), soak_rule(0))?;
    Ok(())
}

/// Removes the soak's long-lived containers, if any are left.
pub fn remove_containers() {
    let _ = Command::new("docker")
        .args(["rm", "-f", SERVER, CLIENT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Load {
    /// Starts every part of the load; `sensor_pid` receives the SIGHUPs.
    pub fn start(deadline: Instant, rules: PathBuf, sensor_pid: u32) -> Result<Load> {
        remove_containers();
        let secs = deadline.saturating_duration_since(Instant::now()).as_secs();
        // A server with a listener that answers, and a client that connects to it on its open
        // port and on 2000 closed ones (a distinct peer each), and pings it.
        run_detached(
            SERVER,
            &format!(
                "end=$(($(date +%s)+{secs})); \
             while [ $(date +%s) -lt $end ]; do nc -l -p 8080 -e /bin/cat 2>/dev/null; done"
            ),
        )?;
        let ip = util::output(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            SERVER,
        ]))?
        .trim()
        .to_string();
        if ip.is_empty() {
            bail!("the soak's server container has no bridge address");
        }
        run_detached(
            CLIENT,
            &format!(
                "end=$(($(date +%s)+{secs})); p=1; \
             while [ $(date +%s) -lt $end ]; do \
               echo hello | nc -w 1 {ip} 8080 >/dev/null 2>&1; \
               nc -w 1 {ip} $((20000 + p)) </dev/null >/dev/null 2>&1; \
               ping -c 1 -W 1 {ip} >/dev/null 2>&1; \
               p=$(( p % 2000 + 1 )); sleep 0.2; \
             done"
            ),
        )?;

        let counts = Arc::new(Counts::default());
        let mut threads = Vec::new();
        for _ in 0..CHURNERS {
            let counts = counts.clone();
            threads.push(thread::spawn(move || churn(deadline, &counts)));
        }
        threads.push(thread::spawn(move || reload(deadline, &rules, sensor_pid)));
        Ok(Load { threads, counts })
    }

    /// Waits for the load's threads (they stop at the deadline) and removes its containers.
    pub fn finish(self) {
        for t in self.threads {
            let _ = t.join();
        }
        remove_containers();
    }
}

fn run_detached(name: &str, script: &str) -> Result<()> {
    util::output(
        Command::new("docker")
            .args([
                "run",
                "-d",
                "--rm",
                "--name",
                name,
                docker::TEST_IMAGE,
                "sh",
                "-c",
            ])
            .arg(script),
    )
    .with_context(|| format!("could not start the soak container {name}"))?;
    Ok(())
}

/// Short-lived containers, one after another: a few programs, a netcat with -e (an alert),
/// a second of sleep.
fn churn(deadline: Instant, counts: &Counts) {
    while Instant::now() < deadline {
        let status = Command::new("docker")
            .args(["run", "--rm", docker::TEST_IMAGE, "sh", "-c"])
            .arg("ls / >/dev/null; id >/dev/null; nc 127.0.0.1 9 -e /bin/true 2>/dev/null; sleep 1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let counter = match status {
            Ok(s) if s.success() => &counts.containers,
            _ => &counts.container_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Rewrites the soak rule every [`RELOAD_EVERY`] (the agent reloads on the change), and sends
/// a SIGHUP after every other change.
fn reload(deadline: Instant, rules: &Path, sensor_pid: u32) {
    let mut generation = 0;
    loop {
        let next = Instant::now() + RELOAD_EVERY;
        if next >= deadline {
            return;
        }
        thread::sleep(RELOAD_EVERY);
        generation += 1;
        if let Err(e) = fs::write(rules.join("soak.yaml"), soak_rule(generation)) {
            eprintln!("soak: could not rewrite the soak rule: {e}");
        }
        if generation.is_multiple_of(2) {
            thread::sleep(Duration::from_secs(2));
            util::signal(sensor_pid.into(), "HUP");
        }
    }
}
