//! Harness for integration tests: a real `sensor run` process, real containers.
//!
//! `cargo xtask test` provides the environment: `SENSOR_BIN` (the built agent),
//! `SENSOR_TEST_IMAGE` (the offline busybox image) and `SENSOR_TEST_ARTIFACTS` (where each
//! sensor's stderr is kept). Run outside it, the tests fail saying so.
//!
//! Containers are Docker's on the host. In the qemu guests of `cargo xtask vm-test`
//! (`SENSOR_TEST_RUNTIME=runc`) the same `docker` calls are carried out with runc ([`runc`]),
//! and `SENSOR_TEST_HOOKS` picks the sensor's hook set (`--hooks`).

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

pub mod bpf_links;
pub mod cri;
pub mod disk;
mod grpc;
pub use grpc::LiveAlerts;
pub mod lines;
pub use lines::{Bodies, Line, Subject, endpoint, pb};
pub mod pki;
pub mod podman;
pub mod python;
pub mod runc;
pub mod uring;
pub mod watch;

/// How long a sensor may take to become ready. Seconds on real kernels; under vm-test's
/// emulated CPUs attaching the kprobe set took 9 to 27 s a start (text patching stops every
/// vCPU), and once over 60 s with the guest reporting a soft lockup.
const READY_WITHIN: Duration = Duration::from_secs(180);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through `cargo xtask test`")
    })
}

/// The sensor binary under test.
pub fn sensor_bin() -> PathBuf {
    PathBuf::from(env("SENSOR_BIN"))
}

/// The offline test image (busybox tools, real sh/id/sleep/true).
pub fn image() -> String {
    env("SENSOR_TEST_IMAGE")
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env("SENSOR_TEST_ARTIFACTS"));
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// A marker unique to this process and call, to find a test's own events.
pub fn marker(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

/// Ends the test as one that cannot run here: it panics with a marker that the result matrix
/// of `cargo xtask vm-test` reports as "skip: REASON" (libtest itself has no skipped state).
pub fn skip(reason: &str) -> ! {
    panic!("SENSOR-TEST-SKIP: {reason}")
}

/// Whether containers are run by runc in a VM guest rather than by Docker.
pub fn on_runc() -> bool {
    std::env::var("SENSOR_TEST_RUNTIME").as_deref() == Ok("runc")
}

/// The runtime the sensor should name for the test's containers.
pub fn expected_runtime() -> &'static str {
    if on_runc() {
        runc::CgroupShape::from_env().runtime()
    } else {
        "docker"
    }
}

/// The cgroup path of container `cid` (relative to the cgroup2 root).
pub fn cgroup_path(cid: &str) -> String {
    if on_runc() {
        runc::cgroup_path(cid)
    } else {
        format!("/docker/{cid}")
    }
}

/// Runs `docker ARGS` (with runc in the VM), returning trimmed stdout; panics with docker's
/// stderr on failure.
pub fn docker(args: &[&str]) -> String {
    if on_runc() {
        return runc::docker(args);
    }
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker run --rm --cidfile F ARGS...` to completion; returns the full container id.
pub fn docker_run_rm(args: &[&str]) -> String {
    let cidfile = std::env::temp_dir().join(format!("{}.cid", marker("cid")));
    let cid_arg = cidfile.display().to_string();
    let mut full = vec!["run", "--rm", "--cidfile", cid_arg.as_str()];
    full.extend_from_slice(args);
    docker(&full);
    let id = std::fs::read_to_string(&cidfile).expect("docker wrote the cidfile");
    let _ = std::fs::remove_file(&cidfile);
    assert_eq!(id.len(), 64, "docker's container id {id:?}");
    id
}

/// `docker run --rm FLAGS IMAGE CMD...` with the test image; returns the full container id.
pub fn run_rm(flags: &[&str], cmd: &[&str]) -> String {
    let image = image();
    let mut args: Vec<&str> = flags.to_vec();
    args.push(&image);
    args.extend_from_slice(cmd);
    docker_run_rm(&args)
}

/// `docker run` options that put the host's build of a test program (`CARGO_BIN_EXE_*`) at
/// `at` in a container, with the host's libraries over the image's (the program is linked
/// against them).
pub struct HostProgram([String; 4]);

impl HostProgram {
    pub fn new(bin: &str, at: &str) -> Self {
        Self([
            "-v".into(),
            format!("{bin}:{at}:ro"),
            "-v".into(),
            "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro".into(),
        ])
    }

    /// The options, for `docker run`.
    pub fn args(&self) -> [&str; 4] {
        self.0.each_ref().map(String::as_str)
    }
}

/// `docker run --rm FLAGS IMAGE sh -c SCRIPT`; returns the full container id.
pub fn run_sh(flags: &[&str], script: &str) -> String {
    run_rm(flags, &["sh", "-c", script])
}

/// The fields every alert must carry: the rule, the full id and runtime of `cid`, its times,
/// text, ATT&CK ids, the triggering events and a spool sequence number.
pub fn assert_alert_fields(a: &pb::Alert, rule: &str, cid: &str) {
    assert_eq!(a.rule_id, rule);
    assert_eq!(a.cid().len(), 64, "full container id: {a:?}");
    assert_eq!(a.cid(), cid);
    assert_eq!(a.container().runtime, expected_runtime());
    for (key, empty) in [
        ("id", a.id.is_empty()),
        ("time", a.time.is_none()),
        ("detected_time", a.detected_time.is_none()),
        ("rule_name", a.rule_name.is_empty()),
        ("severity", a.severity() == pb::Severity::Unspecified),
        ("summary", a.summary.is_empty()),
        ("response", a.response.is_empty()),
        ("techniques", a.techniques.is_empty()),
    ] {
        assert!(!empty, "alert without {key}: {a:?}");
    }
    assert!(
        !a.events.is_empty(),
        "the triggering event is attached: {a:?}"
    );
    assert!(a.seq > 0, "spooled with a sequence number: {a:?}");
}

/// A container's IP address on the default bridge.
pub fn container_ip(cid: &str) -> String {
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", cid]);
    assert!(!ip.is_empty(), "container {cid} has no bridge address");
    ip
}

/// The default bridge's gateway (the host side of docker0): the one address outside the test's
/// own containers that tests may send traffic to.
///
/// Read from the bridge interface itself, not from `docker network inspect`: on dockerd's
/// first start on a machine the bridge network's IPAM config has no `Gateway` field (it
/// appears only after a restart), while the address is always on the interface. Panics with
/// the reason when there is none, so no test passes an empty address on to a tool.
pub fn bridge_gateway() -> String {
    if on_runc() {
        return runc::GATEWAY.to_string();
    }
    let name = docker(&[
        "network",
        "inspect",
        "-f",
        r#"{{index .Options "com.docker.network.bridge.name"}}"#,
        "bridge",
    ]);
    let name = if name.is_empty() { "docker0" } else { &name };
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", name])
        .output()
        .expect("running ip (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    interface_ipv4(&text).unwrap_or_else(|| {
        panic!(
            "the default bridge {name} has no IPv4 address ({}: {} {}); is dockerd running \
             with its default bridge (`cargo xtask docker-up`)?",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// The first IPv4 address in `ip -4 -o addr show` output, without its prefix length.
fn interface_ipv4(ip_output: &str) -> Option<String> {
    ip_output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "inet")?;
        let cidr = words.next()?;
        let addr = cidr.split('/').next()?;
        addr.parse::<std::net::Ipv4Addr>()
            .ok()
            .map(|a| a.to_string())
    })
}

/// Removes containers when dropped, so a failing test leaves none running.
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        if on_runc() {
            self.0.iter().for_each(|id| runc::remove(id));
        } else if !self.0.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.0.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
    }
}

/// A detached test-image container serving something on the network, removed when dropped.
pub struct Listener {
    pub id: String,
    /// Its address on the default bridge.
    pub ip: String,
    _cleanup: Containers,
}

/// The lines a sensor wrote so far: decoded, and as written (saved for post-mortems).
#[derive(Default)]
struct Collected {
    lines: Vec<Line>,
    raw: Vec<String>,
    /// Why a line did not decode: the next wait fails the test with it.
    undecodable: Option<String>,
}

/// A running `sensor run`, its JSON lines collected as they arrive.
///
/// Unless the test passes `--grpc-socket` / `--spool-dir` itself, each sensor gets its own gRPC
/// socket and alert spool under a fresh temporary directory ([`Sensor::socket`]), so sensors
/// started in parallel do not collide on `/run/sensor/sensor.sock`.
pub struct Sensor {
    child: Option<Child>,
    /// Stdout held open and never read ([`JsonOut::Unread`]).
    _unread: Option<std::process::ChildStdout>,
    socket: PathBuf,
    /// The sensor's own temporary directory, removed when it is dropped.
    scratch: PathBuf,
    lines: Arc<(Mutex<Collected>, Condvar)>,
    stderr: PathBuf,
    /// Where the collected lines are saved when the sensor is dropped, for post-mortems.
    saved: PathBuf,
}

/// Where a test's sensor writes its JSON lines, and what the test does with them.
pub enum JsonOut {
    /// Stdout, every line collected ([`Sensor::lines`]).
    Collected,
    /// Stdout; the first line is read, then the pipe's read end is closed (`| head -1`).
    FirstLineThenClosed,
    /// Stdout, a pipe that is kept open and never read (a stalled reader).
    Unread,
    /// A file (`--json-out PATH`); stdout is not used.
    File(PathBuf),
}

impl Sensor {
    /// Starts the sensor and waits until it reports itself ready (its first `health` event).
    pub fn start(name: &str) -> Sensor {
        Self::start_with(name, &[])
    }

    pub fn start_with(name: &str, extra: &[&str]) -> Sensor {
        Self::start_json(name, extra, JsonOut::Collected)
    }

    /// Starts the sensor with its JSON lines going to `json` and waits until it is ready (its
    /// first `health` event, or for uncollected lines its ready line on stderr).
    pub fn start_json(name: &str, extra: &[&str], json: JsonOut) -> Sensor {
        let stderr = artifacts().join(format!("{name}.stderr"));
        let saved = artifacts().join(format!("{name}.events.jsonl"));
        let own = scratch_dir(name);
        let mut delivery: Vec<String> = Vec::new();
        let socket = match extra.iter().position(|a| *a == "--grpc-socket") {
            Some(i) => PathBuf::from(extra[i + 1]),
            None => {
                let socket = own.join("sensor.sock");
                delivery.extend(["--grpc-socket".into(), socket.display().to_string()]);
                socket
            }
        };
        if !extra.contains(&"--spool-dir") {
            let spool = own.join("spool").display().to_string();
            delivery.extend(["--spool-dir".into(), spool]);
        }
        if let Ok(set) = std::env::var("SENSOR_TEST_HOOKS")
            && !extra.contains(&"--hooks")
        {
            delivery.extend(["--hooks".into(), set]);
        }
        let target = match &json {
            JsonOut::File(path) => path.display().to_string(),
            _ => "-".into(),
        };
        let mut command = Command::new(sensor_bin());
        // A test binary killed by hand or by a timeout takes its sensors with it (SIGTERM: the
        // sensor detaches its programs and stops), instead of leaving them attached for the
        // next run's cleanup tests to find. The kernel sends it when the thread that started
        // the sensor ends: each test keeps its sensor in its own thread, and drops it there.
        // SAFETY: only prctl(2) runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut child = command
            .args(["run", "--json-out", &target, "--health-interval", "1"])
            .args(&delivery)
            .args(extra)
            .stdout(match json {
                JsonOut::File(_) => Stdio::null(),
                _ => Stdio::piped(),
            })
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("starting the sensor");
        let lines: Arc<(Mutex<Collected>, Condvar)> = Arc::default();
        let stdout = child.stdout.take();
        let collected = matches!(json, JsonOut::Collected);
        let unread = match json {
            JsonOut::Collected => {
                collect(stdout.unwrap(), usize::MAX, lines.clone());
                None
            }
            JsonOut::FirstLineThenClosed => {
                collect(stdout.unwrap(), 1, lines.clone());
                None
            }
            JsonOut::Unread => stdout,
            JsonOut::File(_) => None,
        };
        let sensor = Sensor {
            child: Some(child),
            _unread: unread,
            socket,
            scratch: own,
            lines,
            stderr,
            saved,
        };
        // Ready at its first health event; a sensor that exits (bad flags, no privileges) fails
        // the test at once instead of after the timeout.
        let ready = if collected {
            let healthy = |lines: &[Line]| lines::events(lines).any(|e| e.kind == "health");
            sensor.wait_until(READY_WITHIN, |lines| healthy(lines) || !sensor.alive());
            healthy(&sensor.lines())
        } else {
            let deadline = Instant::now() + READY_WITHIN;
            while !sensor.stderr_text().contains(" ready in ")
                && sensor.alive()
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(50));
            }
            sensor.stderr_text().contains(" ready in ")
        };
        if !ready {
            let stderr = sensor.stderr_text();
            if let Some(reason) = stderr
                .lines()
                .find(|l| l.contains("is not usable on this kernel"))
            {
                skip(reason.trim_start_matches("sensor: error: "));
            }
            panic!(
                "sensor did not become ready; stderr: {}",
                sensor.stderr_text()
            );
        }
        sensor
    }

    /// Starts a detached container running `cmd` in the test image and waits until this
    /// sensor has seen it listen.
    pub fn listener(&self, cmd: &[&str]) -> Listener {
        self.listener_with(&[], cmd)
    }

    /// [`Sensor::listener`] with `docker run` options (mounts, say) before the image.
    pub fn listener_with(&self, options: &[&str], cmd: &[&str]) -> Listener {
        let image = image();
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(options);
        args.push(image.as_str());
        args.extend_from_slice(cmd);
        let id = docker(&args);
        let cleanup = Containers(vec![id.clone()]);
        let ip = container_ip(&id);
        self.expect(&format!("listen in {}", cmd.join(" ")), |e| {
            e.kind == "socket" && e.socket().op == "listen" && e.cid() == id
        });
        Listener {
            id,
            ip,
            _cleanup: cleanup,
        }
    }

    /// The sensor's gRPC Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// `kill -9`: the agent gets no chance to clean up.
    pub fn kill_9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().expect("SIGKILL to the sensor");
        child.wait().unwrap();
    }

    /// Whether the sensor process still runs (not exited, not a zombie awaiting its reaper).
    pub fn alive(&self) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.0.lock().unwrap().lines.clone()
    }

    /// A copy of every event so far (alerts left out).
    pub fn events(&self) -> Vec<pb::Event> {
        lines::events(&self.lines.0.lock().unwrap().lines)
            .cloned()
            .collect()
    }

    /// A copy of every alert so far.
    pub fn alerts(&self) -> Vec<pb::Alert> {
        lines::alerts(&self.lines.0.lock().unwrap().lines)
            .cloned()
            .collect()
    }

    /// Waits until `done` holds for the lines so far; false on timeout.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[Line]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.lines;
        let mut collected = lock.lock().unwrap();
        loop {
            if let Some(e) = &collected.undecodable {
                panic!("the sensor wrote a line the schema does not decode: {e}");
            }
            if done(&collected.lines) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            collected = cvar.wait_timeout(collected, deadline - now).unwrap().0;
        }
    }

    /// The first event matching `pred`, waiting up to `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&pb::Event) -> bool,
    ) -> Option<pb::Event> {
        let mut found = None;
        self.wait_until(timeout, |lines| {
            found = lines::events(lines).find(|e| pred(e)).cloned();
            found.is_some()
        });
        found
    }

    /// The first alert matching `pred`, waiting up to `timeout`.
    pub fn wait_for_alert(
        &self,
        timeout: Duration,
        pred: impl Fn(&pb::Alert) -> bool,
    ) -> Option<pb::Alert> {
        let mut found = None;
        self.wait_until(timeout, |lines| {
            found = lines::alerts(lines).find(|a| pred(a)).cloned();
            found.is_some()
        });
        found
    }

    /// Like [`Sensor::wait_for`], panicking with `what` and the sensor's stderr on timeout.
    pub fn expect(&self, what: &str, pred: impl Fn(&pb::Event) -> bool) -> pb::Event {
        self.wait_for(Duration::from_secs(30), pred)
            .unwrap_or_else(|| panic!("no event: {what}; sensor stderr: {}", self.stderr_text()))
    }

    /// The alert `rule` raised for container `cid` (waiting up to 30 s); panics with context if
    /// none comes.
    pub fn expect_alert(&self, rule: &str, cid: &str) -> pb::Alert {
        self.expect_alert_where(&format!("{rule} for container {cid}"), |a| {
            a.rule_id == rule && a.cid() == cid
        })
    }

    /// The first alert matching `pred` (waiting up to 30 s); panics with `what`, the alerts
    /// seen and the sensor's stderr if none comes.
    pub fn expect_alert_where(&self, what: &str, pred: impl Fn(&pb::Alert) -> bool) -> pb::Alert {
        self.wait_for_alert(Duration::from_secs(30), pred)
            .unwrap_or_else(|| {
                let seen: Vec<String> = self
                    .alerts()
                    .iter()
                    .map(|a| format!("{} ({})", a.rule_id, a.cid()))
                    .collect();
                panic!(
                    "no alert: {what}; alerts seen: {seen:?}; stderr: {}",
                    self.stderr_text()
                )
            })
    }

    /// Asserts `rule` raised nothing for `cid` by the time the container's exit was processed
    /// and `settle` more passed (aggregates are reported on an interval).
    pub fn assert_no_alert(&self, rule: &str, cid: &str, settle: Duration) {
        self.assert_quiet(Some(rule), &[cid.to_string()], settle);
    }

    /// Asserts that `rule` (None: any rule) raised nothing for any of `cids` by the time their
    /// exits were processed and `settle` more passed.
    pub fn assert_quiet(&self, rule: Option<&str>, cids: &[String], settle: Duration) {
        for cid in cids {
            self.expect(&format!("exit of container {cid}"), |e| {
                e.kind == "container_exited" && e.cid() == cid
            });
        }
        thread::sleep(settle);
        let fired: Vec<pb::Alert> = self
            .alerts()
            .into_iter()
            .filter(|a| rule.is_none_or(|r| a.rule_id == r) && cids.iter().any(|c| a.cid() == c))
            .collect();
        assert!(fired.is_empty(), "alerts on benign cases: {fired:?}");
    }

    /// Stops the sensor with SIGINT (as Ctrl-C would) and returns its exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sensor did not stop within 30 s of SIGINT");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let raw = self.lines.0.lock().unwrap().raw.join("\n");
        let _ = std::fs::write(&self.saved, raw);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Reads up to `count` JSON lines of `stdout` into `into`, then closes it. A line that does
/// not decode is kept as written (saved with the others) and fails the test's next wait.
fn collect(
    stdout: std::process::ChildStdout,
    count: usize,
    into: Arc<(Mutex<Collected>, Condvar)>,
) {
    thread::spawn(move || {
        for text in BufReader::new(stdout).lines().take(count) {
            let Ok(text) = text else { break };
            let line = Line::parse(&text);
            let mut collected = into.0.lock().unwrap();
            collected.raw.push(text);
            match line {
                Ok(line) => collected.lines.push(line),
                Err(e) => {
                    collected.undecodable.get_or_insert(e);
                }
            }
            drop(collected);
            into.1.notify_all();
        }
    });
}

/// `nc -l -e /bin/sh` for a second in a container (`docker run --rm`): a CRS-008 alert.
/// Returns the container id.
pub fn netcat_exec_listener() -> String {
    docker_run_rm(&[
        &image(),
        "sh",
        "-c",
        "nc -l -p 8080 -e /bin/sh & sleep 1; kill $!",
    ])
}

/// A fresh, empty directory for `tag` under the system's temporary directory (short, so Unix
/// socket paths inside stay under their 108-byte limit).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(marker(&format!("sensor-it-{tag}")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// Removes a scratch directory a runtime kept its store in, unmounting what is still mounted
/// under it first (a container's root filesystem outlives a runtime stopped mid-test).
pub fn remove_scratch_dir(dir: &Path) {
    let root = dir.display().to_string();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if m.starts_with(&root) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A shipped rule file (which has no exceptions) with `exceptions` (YAML list items, indented
/// by two) appended: what a detection engineer's allow-list override looks like.
pub fn shipped_rule_with_exceptions(file: &str, exceptions: &str) -> String {
    let shipped = shipped_rule(file);
    assert!(
        !shipped.contains("exceptions:"),
        "{file} has exceptions now: update the tests' overrides"
    );
    format!("{shipped}exceptions:\n{exceptions}")
}

/// The text of a rule file shipped in `rules/` (`"008-netcat-c2.yaml"`), for tests that write
/// an override of it (`--rules DIR`) with other parameters or exceptions.
pub fn shipped_rule(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the shipped rule {}: {e}", path.display()))
}

/// Gives `image` a second name (`docker tag`) for tests that need two images, and removes that
/// name when dropped.
pub struct ImageTag(pub String);

impl ImageTag {
    pub fn new(image: &str, tag: &str) -> ImageTag {
        docker(&["tag", image, tag]);
        ImageTag(tag.to_string())
    }
}

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// `GET path` over plain HTTP/1.0 (no chunking) from `addr`: (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Event field helpers.
pub mod ev {
    use crate::{Subject, endpoint, pb};

    /// An endpoint's address with an IPv4-mapped IPv6 prefix removed ("" when absent).
    pub fn addr(e: &Option<pb::Endpoint>) -> &str {
        let a = endpoint(e).address.as_str();
        a.strip_prefix("::ffff:").unwrap_or(a)
    }

    /// `process.args` as strings.
    pub fn args(e: &pb::Event) -> Vec<&str> {
        e.process().args.iter().map(String::as_str).collect()
    }

    pub fn is_exec_of(e: &pb::Event, argv0: &str) -> bool {
        e.kind == "exec" && e.process().args.first().is_some_and(|a| a == argv0)
    }

    /// A duration in seconds (-1 when absent).
    pub fn seconds(d: &Option<pbjson_types::Duration>) -> f64 {
        d.as_ref()
            .map_or(-1.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::interface_ipv4;

    #[test]
    fn bridge_address_from_ip_output() {
        let up = "5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(interface_ipv4(up).as_deref(), Some("172.17.0.1"));
        // No address yet (or `ip` printed nothing because the link does not exist).
        assert_eq!(interface_ipv4(""), None);
        assert_eq!(
            interface_ipv4("5: docker0    inet6 fe80::1/64 scope link"),
            None
        );
        assert_eq!(interface_ipv4("5: docker0    inet garbage/16"), None);
    }
}
