//! Docker for the integration tests: a running dockerd (reused, or started and later stopped
//! by us) and the offline test image `sensor-test/busybox:latest`, built from the host's
//! busybox-static because no registry is reachable.
//!
//! Also `cargo xtask docker-up` / `docker-down` for developers running the tests by hand.

use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{self, output, step};

pub const TEST_IMAGE: &str = "sensor-test/busybox:latest";
const LABEL: &str = "sensor.rootfs.sha256";

/// An offline image: busybox with its applet links, plus host programs with their libraries.
pub struct Image {
    pub name: &'static str,
    /// Change this when the rootfs layout changes, so existing images get rebuilt.
    pub recipe: &'static str,
    pub programs: &'static [(&'static str, &'static str)],
    /// A shell command the new image must run successfully; its output is printed.
    pub check: &'static str,
}

/// The integration tests' image.
pub const TEST: Image = Image {
    name: TEST_IMAGE,
    recipe: "sensor-test/busybox recipe 5: busybox + applet links, host dash/id/sleep/true/iptables/bpftool/strace/perf with libs, tmp proc sys dev etc root, passwd root nobody",
    programs: HOST_PROGRAMS,
    check: "id; nc --help 2>&1 | head -1",
};

/// Host programs copied into the image (with their shared libraries) over busybox's applets.
///
/// Debian's busybox-static runs applets in-process ("standalone shell"): `sh -c 'id'` forks but
/// never calls execve, so no exec-based sensor can see `id`. Real Debian-based images run real
/// binaries; these make the test image behave like one, while busybox still provides nc, ping...
const HOST_PROGRAMS: &[(&str, &str)] = &[
    ("/bin/dash", "bin/sh"),
    ("/usr/bin/id", "bin/id"),
    ("/usr/bin/sleep", "bin/sleep"),
    ("/usr/bin/true", "bin/true"),
    // Debian's iptables (nft backend) for the netfilter-manipulation rule; xtables-nft-multi
    // picks its personality from argv[0].
    ("/usr/sbin/xtables-nft-multi", "usr/sbin/iptables"),
    // Real tools for the sensor-tampering rules: bpf() program loads, ptrace attaches and
    // perf_event_open from a container.
    ("/usr/sbin/bpftool", "usr/sbin/bpftool"),
    ("/usr/bin/strace", "usr/bin/strace"),
    ("/usr/bin/perf", "usr/bin/perf"),
];
const BUSYBOX: &str = "/bin/busybox";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn log_path(root: &Path) -> PathBuf {
    util::target_dir(root).join("dockerd.log")
}

fn pid_path(root: &Path) -> PathBuf {
    util::target_dir(root).join("dockerd.pid")
}

/// True when `docker version` reaches a daemon within 5 s.
pub fn daemon_running() -> bool {
    let mut cmd = Command::new("docker");
    cmd.args(["version", "--format", "{{.Server.Version}}"]);
    matches!(util::output_timeout(&mut cmd, PROBE_TIMEOUT), Ok(Some(out)) if out.status.success())
}

/// A dockerd for the tests. If we started it, dropping this stops it (also on errors and panics).
pub struct Dockerd {
    child: Option<Child>,
    pid_file: PathBuf,
}

impl Dockerd {
    /// Reuses a running daemon or starts `dockerd --ip-masq=false` in its own process group.
    pub fn ensure(root: &Path) -> Result<Dockerd> {
        let pid_file = pid_path(root);
        if daemon_running() {
            return Ok(Dockerd {
                child: None,
                pid_file,
            });
        }
        util::require_root("dockerd is not running and starting it needs root; run as root")?;
        let log = log_path(root);
        fs::create_dir_all(util::target_dir(root))?;
        let log_file =
            File::create(&log).with_context(|| format!("could not create {}", log.display()))?;
        step(format!("starting dockerd (log: {})...", log.display()));
        let child = Command::new("dockerd")
            .arg("--ip-masq=false")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .context(
                "could not start dockerd; install docker.io (`cargo xtask setup --for test`)",
            )?;
        let pid = child.id();
        // From here on, dropping `this` stops dockerd again.
        let mut this = Dockerd {
            child: Some(child),
            pid_file,
        };
        fs::write(&this.pid_file, pid.to_string())
            .with_context(|| format!("could not write {}", this.pid_file.display()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = this.child.as_mut().expect("just set").try_wait()? {
                this.child = None;
                let _ = fs::remove_file(&this.pid_file);
                bail!(
                    "dockerd exited during start-up ({status}); {}",
                    log_tail(&log)
                );
            }
            if daemon_running() {
                return Ok(this);
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "dockerd did not answer within {}s; {}",
                    START_TIMEOUT.as_secs(),
                    log_tail(&log)
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// True if this run started dockerd (and will stop it).
    pub fn started_here(&self) -> bool {
        self.child.is_some()
    }

    /// Leaves dockerd running after we exit (`docker-up`); `docker-down` stops it.
    pub fn keep_running(mut self) {
        self.child = None;
    }

    /// SIGTERM, up to 20 s for dockerd to exit, then SIGKILL to it, its process group and
    /// its children (containerd runs in a process group of its own).
    pub fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        step("stopping the dockerd this run started...");
        let r = stop_child(child, STOP_TIMEOUT);
        let _ = fs::remove_file(&self.pid_file);
        r
    }
}

fn stop_child(mut child: Child, timeout: Duration) -> Result<()> {
    let pid = child.id();
    util::signal(i64::from(pid), "TERM");
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            step(format!(
                "dockerd did not stop within {}s; killing it",
                timeout.as_secs()
            ));
            kill_hard(pid);
            child.wait()?;
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// SIGKILL to `pid`'s children, its process group and itself.
fn kill_hard(pid: u32) {
    for c in util::children(pid) {
        util::signal(i64::from(c), "KILL");
    }
    util::signal(-i64::from(pid), "KILL");
    util::signal(i64::from(pid), "KILL");
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: warning: could not stop dockerd: {e:#}");
        }
    }
}

/// `cargo xtask docker-down`: stops a dockerd that `docker-up` (or an interrupted test run)
/// started, found through `target/dockerd.pid`. Other daemons are left alone.
pub fn docker_down(root: &Path) -> Result<()> {
    let pid_file = pid_path(root);
    let Ok(text) = fs::read_to_string(&pid_file) else {
        step("no dockerd started by xtask (no target/dockerd.pid); nothing to stop");
        return Ok(());
    };
    let pid: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pid_file.display()))?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "dockerd" || !util::pid_alive(pid) {
        let _ = fs::remove_file(&pid_file);
        step("the dockerd xtask started is already gone");
        return Ok(());
    }
    step(format!("stopping dockerd (pid {pid})..."));
    util::signal(i64::from(pid), "TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while util::pid_alive(pid) {
        if Instant::now() > deadline {
            step("dockerd did not stop within 20 s; killing it");
            kill_hard(pid);
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let _ = fs::remove_file(&pid_file);
    Ok(())
}

/// Where dockerd keeps its state (its default `--data-root`).
const DATA_ROOT: &str = "/var/lib/docker";
/// The default bridge dockerd creates on start.
const BRIDGE: &str = "docker0";

/// `cargo xtask docker-down --forget` and `cargo xtask test --docker-first-start`: puts the
/// machine back in the state of one where dockerd never ran, so that its next start is a first
/// start (which differs: the default bridge's IPAM config then has no `Gateway`). Removes
/// what dockerd's data root holds (networks, images, containers) and the `docker0` bridge. The
/// data root itself may be a mount point (a volume, as on CI machines): it is emptied, not
/// removed. Refuses while any dockerd runs or anything is still mounted below the data root.
pub fn forget_state() -> Result<()> {
    // (A dockerd that was stopped may linger as a zombie where init reaps late.)
    if daemon_running() || util::process_running("dockerd") {
        bail!(
            "a dockerd is running; stop it first (`cargo xtask docker-down` stops one that xtask \
             started) before dockerd's state can be removed"
        );
    }
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("could not read /proc/self/mounts")?;
    if let Some(m) = mounts_under(&mounts, DATA_ROOT).first() {
        bail!("{m} is still mounted under {DATA_ROOT}; unmount it (`umount {m}`) and retry");
    }
    if let Ok(entries) = fs::read_dir(DATA_ROOT) {
        step(format!(
            "removing dockerd's state in {DATA_ROOT} (as on a machine where it never ran)..."
        ));
        for entry in entries {
            let path = entry.context("reading dockerd's data root")?.path();
            let removed = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        step(format!("deleting the {BRIDGE} bridge..."));
        util::run(Command::new("ip").args(["link", "del", BRIDGE]))
            .with_context(|| format!("could not delete {BRIDGE}"))?;
    }
    Ok(())
}

/// Mount points below `dir` (not `dir` itself) in a `/proc/self/mounts` text.
fn mounts_under<'a>(mounts: &'a str, dir: &str) -> Vec<&'a str> {
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(dir) && Path::new(m) != Path::new(dir))
        .collect()
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("last lines of {}:\n{tail}", log.display())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    first_word(&out)
}

fn sha256_bytes(data: &[u8]) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start sha256sum")?;
    child.stdin.take().expect("piped").write_all(data)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "sha256sum failed ({})", out.status);
    first_word(&String::from_utf8_lossy(&out.stdout))
}

fn first_word(s: &str) -> Result<String> {
    s.split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

/// The label value: sha256 of the recipe string, busybox's and the programs' own sha256.
fn image_hash(image: &Image) -> Result<String> {
    let busybox = sha256_file(Path::new(BUSYBOX)).with_context(|| {
        format!("could not hash {BUSYBOX}; install busybox-static (`cargo xtask setup --for test`)")
    })?;
    let mut text = format!("{}\n{busybox}\n", image.recipe);
    for (host, _) in image.programs {
        text.push_str(&sha256_file(Path::new(host))?);
        text.push('\n');
    }
    sha256_bytes(text.as_bytes())
}

/// Builds the integration tests' image unless it is up to date.
pub fn ensure_test_image(root: &Path) -> Result<()> {
    ensure_image(root, &TEST)
}

/// Builds `image` unless an image with the same recipe, busybox and programs exists.
pub fn ensure_image(root: &Path, image: &Image) -> Result<()> {
    let name = image.name;
    let want = image_hash(image)?;
    let format = format!("{{{{index .Config.Labels \"{LABEL}\"}}}}");
    let have = util::output_ok(
        Command::new("docker").args(["image", "inspect", "--format", &format, name]),
    );
    if have.is_some_and(|h| h.trim() == want) {
        return Ok(());
    }
    step(format!(
        "building the image {name} offline from {BUSYBOX}..."
    ));
    let rootfs = util::target_dir(root).join("image-rootfs");
    build_rootfs(&rootfs, image.programs)?;
    let old_id = util::output_ok(
        Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", name]),
    );
    let imported = import(&rootfs, name, &want, &[r#"CMD ["/bin/sh"]"#.into()]);
    let _ = fs::remove_dir_all(&rootfs);
    imported?;
    if let Some(old) = old_id {
        // The outdated image is untagged now; remove it unless something still uses it.
        let _ = util::output_ok(Command::new("docker").args(["image", "rm", old.trim()]));
    }

    let check = output(Command::new("docker").args(["run", "--rm", name, "sh", "-c", image.check]))
        .with_context(|| format!("the new image {name} does not run"))?;
    step(format!(
        "{name} works: {}",
        check.trim().replace('\n', " | ")
    ));
    Ok(())
}

/// The test image's root filesystem in `rootfs`; also the image of the VM guests.
pub fn build_test_rootfs(rootfs: &Path) -> Result<()> {
    build_rootfs(rootfs, TEST.programs)
}

/// A root filesystem in `rootfs` (replaced if it exists): busybox with its applet links and
/// `programs` with their libraries.
fn build_rootfs(rootfs: &Path, programs: &[(&str, &str)]) -> Result<()> {
    if rootfs.exists() {
        fs::remove_dir_all(rootfs)
            .with_context(|| format!("could not remove {}", rootfs.display()))?;
    }
    busybox_rootfs(rootfs)?;
    add_host_programs(rootfs, programs)
}

/// [`make_rootfs`] with the host's busybox-static and every applet it lists.
pub fn busybox_rootfs(rootfs: &Path) -> Result<()> {
    let applets = output(Command::new(BUSYBOX).arg("--list-full"))
        .with_context(|| format!("`{BUSYBOX} --list-full` failed; is busybox-static installed?"))?;
    let applets: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    make_rootfs(rootfs, Path::new(BUSYBOX), &applets)
}

/// `tar -C rootfs -cf - . | docker import --change ... - NAME`, with `changes` (Dockerfile
/// instructions: CMD, ENTRYPOINT, ...) and the rootfs hash as a label.
pub fn import(rootfs: &Path, name: &str, hash: &str, changes: &[String]) -> Result<()> {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start tar")?;
    let tar_out = tar.stdout.take().expect("piped");
    let mut import = Command::new("docker");
    import
        .arg("import")
        .args(changes.iter().flat_map(|c| ["--change", c.as_str()]))
        .args(["--change", &format!("LABEL {LABEL}={hash}")])
        .args(["-", name])
        .stdin(tar_out);
    let out = import.output().context("could not start docker import")?;
    let tar_status = tar.wait()?;
    anyhow::ensure!(
        tar_status.success(),
        "tar of {} failed ({tar_status})",
        rootfs.display()
    );
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            util::display(&import),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Copies each `(host path, image path)` program and the shared libraries `ldd` lists for it.
pub fn add_host_programs(rootfs: &Path, programs: &[(&str, &str)]) -> Result<()> {
    for (host, inside) in programs {
        let target = rootfs.join(inside);
        // Drop busybox's links of the same name everywhere on PATH, so the real one is found.
        let name = Path::new(inside)
            .file_name()
            .context("program path has no name")?;
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin"] {
            let _ = fs::remove_file(rootfs.join(dir).join(name));
        }
        fs::copy(host, &target)
            .with_context(|| format!("could not copy {host} into the test image"))?;
        let libs = output(Command::new("ldd").arg(host))
            .with_context(|| format!("`ldd {host}` failed"))?;
        for lib in libs
            .lines()
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        {
            let dest = rootfs.join(lib.trim_start_matches('/'));
            if dest.exists() {
                continue;
            }
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(lib, &dest)
                .with_context(|| format!("could not copy {lib} (needed by {host})"))?;
        }
    }
    Ok(())
}

/// A minimal root filesystem: busybox, a link per applet, the usual dirs and two users.
fn make_rootfs(rootfs: &Path, busybox: &Path, applets: &[&str]) -> Result<()> {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("could not create {}", bin.display()))?;
    fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("could not copy {}", busybox.display()))?;
    for applet in applets {
        let rel = Path::new(applet);
        if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
            bail!("unexpected applet path {applet:?} from busybox --list-full");
        }
        if rel == Path::new("bin/busybox") {
            continue;
        }
        let link = rootfs.join(rel);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        if link.symlink_metadata().is_err() {
            symlink("/bin/busybox", &link)
                .with_context(|| format!("could not create {}", link.display()))?;
        }
    }
    for dir in ["tmp", "proc", "sys", "dev", "etc", "root"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_layout() {
        let base = std::env::temp_dir().join(format!("xtask-rootfs-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        let fake_busybox = base.join("busybox");
        fs::write(&fake_busybox, b"#!busybox").unwrap();
        let rootfs = base.join("rootfs");
        make_rootfs(
            &rootfs,
            &fake_busybox,
            &["bin/sh", "usr/bin/id", "bin/busybox", "sbin/ip"],
        )
        .unwrap();
        assert_eq!(fs::read(rootfs.join("bin/busybox")).unwrap(), b"#!busybox");
        for link in ["bin/sh", "usr/bin/id", "sbin/ip"] {
            assert_eq!(
                fs::read_link(rootfs.join(link)).unwrap(),
                Path::new("/bin/busybox")
            );
        }
        let tmp_mode = fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
        assert!(
            fs::read_to_string(rootfs.join("etc/passwd"))
                .unwrap()
                .contains("nobody:x:65534")
        );
        assert!(make_rootfs(&base.join("bad"), &fake_busybox, &["../escape"]).is_err());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn stop_kills_what_ignores_sigterm() {
        let child = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30 & wait; sleep 30"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        thread::sleep(Duration::from_millis(200));
        let kids = util::children(pid);
        assert_eq!(kids.len(), 1, "sh should have started sleep");
        let t = Instant::now();
        stop_child(child, Duration::from_secs(1)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_millis(100));
        assert!(
            !util::pid_alive(kids[0]),
            "the child of the stopped process survived"
        );
    }

    /// Needs root and docker.io: `cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore]
    fn dockerd_guard_and_test_image() {
        let root = util::workspace_root();
        let was_running = daemon_running();
        {
            let d = Dockerd::ensure(&root).unwrap();
            assert_eq!(d.started_here(), !was_running);
            assert!(daemon_running());
            ensure_test_image(&root).unwrap();
        }
        assert_eq!(
            daemon_running(),
            was_running,
            "the guard did not restore the daemon's state"
        );
    }

    #[test]
    fn mounts_below_the_data_root() {
        let mounts = "overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0\n\
                      tmpfs /run tmpfs rw 0 0\n\
                      /dev/vda /var/lib/docker ext4 rw 0 0\n\
                      /dev/vda /var/lib/dockerish ext4 rw 0 0\n";
        assert_eq!(
            mounts_under(mounts, DATA_ROOT),
            ["/var/lib/docker/overlay2/abc/merged"]
        );
        assert!(mounts_under("tmpfs /run tmpfs rw 0 0\n", DATA_ROOT).is_empty());
    }

    #[test]
    fn hash_of_bytes() {
        // sha256("abc")
        assert_eq!(
            sha256_bytes(b"abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
