//! Harness for integration tests: a real `sensor run` process, real Docker containers.
//!
//! `cargo xtask test` provides the environment: `SENSOR_BIN` (the built agent),
//! `SENSOR_TEST_IMAGE` (the offline busybox image) and `SENSOR_TEST_ARTIFACTS` (where each
//! sensor's stderr is kept). Run outside it, the tests fail saying so.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

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

/// Runs `docker ARGS`, returning trimmed stdout; panics with docker's stderr on failure.
pub fn docker(args: &[&str]) -> String {
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

/// A running `sensor run`, its JSON lines collected as they arrive.
pub struct Sensor {
    child: Option<Child>,
    events: Arc<(Mutex<Vec<Value>>, Condvar)>,
    stderr: PathBuf,
    /// Where the collected events are saved when the sensor is dropped, for post-mortems.
    saved: PathBuf,
}

impl Sensor {
    /// Starts the sensor and waits until it reports itself ready (its first `health` event).
    pub fn start(name: &str) -> Sensor {
        Self::start_with(name, &[])
    }

    pub fn start_with(name: &str, extra: &[&str]) -> Sensor {
        let stderr = artifacts().join(format!("{name}.stderr"));
        let saved = artifacts().join(format!("{name}.events.jsonl"));
        let mut child = Command::new(sensor_bin())
            .args(["run", "--json-out", "-", "--health-interval", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("starting the sensor");
        let stdout = child.stdout.take().unwrap();
        let events: Arc<(Mutex<Vec<Value>>, Condvar)> = Arc::default();
        let sink = events.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("sensor wrote a line that is not JSON ({e}): {line}")
                });
                sink.0.lock().unwrap().push(value);
                sink.1.notify_all();
            }
        });
        let sensor = Sensor {
            child: Some(child),
            events,
            stderr,
            saved,
        };
        if sensor
            .wait_for(Duration::from_secs(60), |e| e["kind"] == "health")
            .is_none()
        {
            panic!(
                "sensor did not become ready; stderr: {}",
                sensor.stderr_text()
            );
        }
        sensor
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.0.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the events so far; false on timeout.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.events;
        let mut events = lock.lock().unwrap();
        loop {
            if done(&events) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            events = cvar.wait_timeout(events, deadline - now).unwrap().0;
        }
    }

    /// The first event matching `pred`, waiting up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let mut found = None;
        self.wait_until(timeout, |evs| {
            found = evs.iter().find(|e| pred(e)).cloned();
            found.is_some()
        });
        found
    }

    /// Like [`Sensor::wait_for`], panicking with `what` and the sensor's stderr on timeout.
    pub fn expect(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(Duration::from_secs(30), pred)
            .unwrap_or_else(|| panic!("no event: {what}; sensor stderr: {}", self.stderr_text()))
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
        let lines: Vec<String> = self.events().iter().map(Value::to_string).collect();
        let _ = std::fs::write(&self.saved, lines.join("\n"));
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Event field helpers.
pub mod ev {
    use serde_json::Value;

    pub fn kind(e: &Value) -> &str {
        e["kind"].as_str().unwrap_or("")
    }

    pub fn container_id(e: &Value) -> &str {
        e["container"]["id"].as_str().unwrap_or("")
    }

    /// `process.args` as strings.
    pub fn args(e: &Value) -> Vec<&str> {
        e["process"]["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    pub fn is_exec_of(e: &Value, argv0: &str) -> bool {
        kind(e) == "exec" && args(e).first() == Some(&argv0)
    }

    /// A proto3-JSON duration ("0.374s") in seconds.
    pub fn seconds(v: &Value) -> f64 {
        v.as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1.0)
    }
}
