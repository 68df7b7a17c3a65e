//! `sensor watch` as a client of a test's sensor: another process (so another gRPC client), its
//! stdout lines collected by a thread; killed when dropped.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{Sensor, sensor_bin};

pub struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    /// `sensor watch --addr unix://SOCKET ARGS` against `sensor`.
    pub fn start(sensor: &Sensor, args: &[&str]) -> Watch {
        let mut child = Command::new(sensor_bin())
            .args(["watch", "--addr"])
            .arg(format!("unix://{}", sensor.socket().display()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sensor watch");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Watch { child, lines }
    }

    /// The first line `pred` accepts, waiting up to 30 s.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "sensor watch printed no {what}: {:#?}",
                self.lines.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
