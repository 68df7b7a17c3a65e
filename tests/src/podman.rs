//! Podman with a private store, and its Docker-compatible API served by `podman system service`
//! on a socket of its own: the agent's `--podman-socket` in the tests.
//!
//! Without systemd podman uses the cgroupfs manager (containers in `/libpod_parent/libpod-<id>`)
//! and the file events backend, which both the service and the `podman` commands of the tests
//! are told to use, with the same root, run root and tmp dir, so the service sees the
//! containers the commands make. The test image comes from `docker save` (no registry).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{image, scratch_dir};

/// A private podman store and its API service; see the module doc.
pub struct Podman {
    dir: PathBuf,
    service: Child,
    socket: PathBuf,
}

impl Podman {
    /// Makes the store, loads the test image and starts the API service.
    pub fn start(tag: &str) -> Podman {
        let dir = scratch_dir(tag);
        let socket = dir.join("podman.sock");
        let tar = dir.join("image.tar");
        crate::docker(&["save", "-o", &tar.display().to_string(), &image()]);
        let log = fs::File::create(dir.join("service.log")).unwrap();
        run(&dir, &["load", "-q", "-i", &tar.display().to_string()]);
        let _ = fs::remove_file(&tar);
        let service = command(&dir)
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "starting podman system service (Debian's podman: cargo xtask setup --for test)",
            );
        let me = Podman {
            dir,
            service,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "podman system service made no socket in 30 s: {}",
                fs::read_to_string(me.dir.join("service.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        me
    }

    /// The API socket, for the agent's `--podman-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `podman ARGS` on this store; its stdout, trimmed. Panics with stderr on failure.
    pub fn podman(&self, args: &[&str]) -> String {
        run(&self.dir, args)
    }

    /// `podman run -d --network none FLAGS IMAGE CMD...`: the full id.
    pub fn run_detached(&self, flags: &[&str], cmd: &[&str]) -> String {
        let img = image();
        // Podman raises RLIMIT_NOFILE and RLIMIT_NPROC by default, which needs
        // CAP_SYS_RESOURCE, and this machine withholds it: ordinary limits instead.
        let mut args = vec![
            "run",
            "-d",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        ];
        args.extend_from_slice(flags);
        args.push(&img);
        args.extend_from_slice(cmd);
        let id = self.podman(&args);
        assert_eq!(id.len(), 64, "podman's container id {id:?}");
        id
    }
}

/// `podman` with the options of the store in `d`.
fn command(d: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(d.join("root"))
        .arg("--runroot")
        .arg(d.join("run"))
        .arg("--tmpdir")
        .arg(d.join("tmp"))
        .args([
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--storage-driver",
            "overlay",
            // crun refuses cgroup v1 hierarchies with controllers also in v2 (this host's
            // hybrid layout); runc handles them.
            "--runtime",
            "runc",
        ])
        .stdin(Stdio::null());
    c
}

/// Runs `podman ARGS` on the store in `dir`; its stdout, trimmed. Panics with stderr on
/// failure.
fn run(dir: &Path, args: &[&str]) -> String {
    let out = command(dir).args(args).output().expect("running podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = command(&self.dir)
            .args(["rm", "-f", "-a", "-t", "0"])
            .output();
        let _ = self.service.kill();
        let _ = self.service.wait();
        let _ = command(&self.dir).args(["system", "reset", "-f"]).output();
        crate::remove_scratch_dir(&self.dir);
    }
}
