//! What the workloads run against, set up once per bench and torn down by drop: the files nginx
//! serves, an nginx on loopback, and two containers of the bench image (an nginx server and a
//! client holding the load tools), on Docker's default bridge.
//!
//! The bench image is the test image's busybox plus the host's own Debian binaries (dd, true,
//! dash, nginx, wrk, ping) with their libraries, so the host and container variants of a
//! workload run the same program.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{docker, util};

pub const IMAGE: docker::Image = docker::Image {
    name: "sensor-bench/tools:latest",
    recipe: "sensor-bench/tools recipe 1: busybox + applet links, host dash/dd/true/nginx/wrk/ping with libs",
    programs: &[
        ("/bin/dash", "bin/sh"),
        ("/usr/bin/dd", "bin/dd"),
        ("/usr/bin/true", "bin/true"),
        ("/usr/bin/ping", "bin/ping"),
        ("/usr/sbin/nginx", "usr/sbin/nginx"),
        ("/usr/bin/wrk", "usr/bin/wrk"),
    ],
    check: "nginx -v 2>&1; wrk -v 2>&1 | head -1",
};

/// Where the host's nginx listens (loopback only).
pub const HOST_NGINX: &str = "127.0.0.1:18080";
/// Where the server container's nginx listens, on its bridge address.
pub const CONTAINER_PORT: u16 = 8080;
/// The page of the request-rate and connect workloads.
pub const SMALL_PAGE: &str = "small.html";
const SMALL_BYTES: usize = 2048;
/// The file of the bulk-transfer workload.
pub const BIG_FILE: &str = "big.bin";
const BIG_BYTES: usize = 64 << 20;

const SERVER: &str = "sensor-bench-server";
const CLIENT: &str = "sensor-bench-client";
/// The client container's network sysctls: a connect storm opens about 10 000 connections a
/// second, and some end in TIME_WAIT on the client's side (both ends close at once). With
/// Docker's defaults (ports 32768-60999, TIME_WAIT ports not reused off loopback) the half of
/// the range `connect()` tries first fills within a minute of back-to-back rounds, each
/// connect then scans thousands of ports, and the rate falls from about 10 000 to 300 a second
/// whatever the mode (measured with no sensor). A wide range and TIME_WAIT reuse keep the
/// allocator's cost flat, as on the host's loopback, where the kernel reuses such ports. The
/// client's ports then fall on both sides of 32768, as on nodes tuned for many connections:
/// the sensor must tell them from the service's port by the listener, not by the number.
const CLIENT_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_local_port_range=1024 65535",
    "net.ipv4.tcp_tw_reuse=1",
];
/// The client container's idle process; the bench removes it long before this ends.
const CLIENT_LIFETIME_SECS: &str = "3600";

pub struct Fixture {
    host_nginx: Child,
    pub server: Container,
    pub client: Container,
    /// The client's gateway: the bridge's address on the host.
    pub gateway: String,
}

pub struct Container {
    pub name: &'static str,
    pub id: String,
    pub ip: String,
}

impl Fixture {
    pub fn start(root: &Path, dir: &Path) -> Result<Fixture> {
        docker::ensure_image(root, &IMAGE)?;
        let www = dir.join("www");
        fs::create_dir_all(&www)?;
        fs::write(www.join(SMALL_PAGE), "x".repeat(SMALL_BYTES))?;
        if fs::metadata(www.join(BIG_FILE)).map(|m| m.len()).ok() != Some(BIG_BYTES as u64) {
            fs::write(www.join(BIG_FILE), vec![0u8; BIG_BYTES])?;
        }
        let tmp = dir.join("nginx-tmp");
        fs::create_dir_all(&tmp)?;
        fs::write(
            dir.join("nginx-host.conf"),
            nginx_conf(HOST_NGINX, &www, &tmp),
        )?;
        fs::write(
            dir.join("nginx-container.conf"),
            nginx_conf(
                &format!("0.0.0.0:{CONTAINER_PORT}"),
                Path::new("/bench/www"),
                Path::new("/tmp"),
            ),
        )?;
        stop_leftover_nginx(&tmp.join("nginx.pid"), &dir.join("nginx-host.conf"));
        if TcpStream::connect(HOST_NGINX).is_ok() {
            bail!(
                "something already listens on {HOST_NGINX} (an nginx left by an interrupted \
                 bench? `ss -ltnp 'sport = :18080'` names it); the bench's nginx needs that port"
            );
        }
        remove_containers();
        let host_nginx = Command::new("nginx")
            .arg("-e")
            .arg(dir.join("nginx-host-error.log"))
            .arg("-c")
            .arg(dir.join("nginx-host.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .context("could not start nginx (`cargo xtask setup --for bench`)")?;
        let mut fx = Fixture {
            host_nginx,
            server: Container::run(
                SERVER,
                dir,
                &[],
                &[
                    "nginx",
                    "-e",
                    "/tmp/nginx-error.log",
                    "-c",
                    "/bench/nginx-container.conf",
                    "-g",
                    "daemon off;",
                ],
            )?,
            client: Container::run(
                CLIENT,
                dir,
                CLIENT_SYSCTLS,
                &["sleep", CLIENT_LIFETIME_SECS],
            )?,
            gateway: String::new(),
        };
        fx.gateway = inspect(CLIENT, "{{.NetworkSettings.Gateway}}")?;
        if fx.gateway.is_empty() {
            bail!("the client container has no gateway address; is Docker's bridge network up?");
        }
        wait_listening(HOST_NGINX.parse()?)?;
        wait_listening(SocketAddr::new(fx.server.ip.parse()?, CONTAINER_PORT))?;
        Ok(fx)
    }

    /// `http://SERVER:8080/PATH`, as the client container reaches it.
    pub fn server_url(&self, path: &str) -> String {
        format!("http://{}:{CONTAINER_PORT}/{path}", self.server.ip)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker too (SIGKILL would orphan the listening worker).
        util::signal(self.host_nginx.id().into(), "TERM");
        let _ = self.host_nginx.wait();
        remove_containers();
    }
}

impl Container {
    fn run(name: &'static str, dir: &Path, sysctls: &[&str], cmd: &[&str]) -> Result<Container> {
        let id = util::output(
            Command::new("docker")
                .args(["run", "-d", "--name", name])
                .args(sysctls.iter().flat_map(|s| ["--sysctl", s]))
                .arg("-v")
                .arg(format!("{}:/bench:ro", dir.display()))
                .arg(IMAGE.name)
                .args(cmd),
        )
        .with_context(|| format!("could not start the bench container {name}"))?
        .trim()
        .to_string();
        let ip = inspect(name, "{{.NetworkSettings.IPAddress}}")?;
        if ip.is_empty() {
            bail!("the bench container {name} has no bridge address");
        }
        Ok(Container { name, id, ip })
    }

    /// `docker exec NAME ARGS...`
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(["exec", self.name]).args(args);
        cmd
    }
}

fn inspect(name: &str, format: &str) -> Result<String> {
    Ok(
        util::output(Command::new("docker").args(["inspect", "--format", format, name]))?
            .trim()
            .to_string(),
    )
}

fn remove_containers() {
    let _ = util::output_ok(Command::new("docker").args(["rm", "-f", SERVER, CLIENT]));
}

/// Stops the host nginx an interrupted bench left running (its pid file names it, its command
/// line carries our configuration file), so that the port is free again.
fn stop_leftover_nginx(pid_file: &Path, conf: &Path) {
    let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(&*conf.to_string_lossy()) {
        return;
    }
    util::step(format!(
        "stopping the nginx (pid {pid}) an interrupted bench left running"
    ));
    util::signal(pid.into(), "TERM");
    let started = Instant::now();
    while util::pid_alive(pid) && started.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_listening(addr: SocketAddr) -> Result<()> {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("nginx did not listen on {addr} within 30 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One worker, no logs, every temporary path under `tmp` (the default ones do not exist in the
/// image), keep-alive connections that last the whole workload.
fn nginx_conf(listen: &str, www: &Path, tmp: &Path) -> String {
    let tmp = tmp.display();
    format!(
        "worker_processes 1;\nuser root;\npid {tmp}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 1000000;\n  \
         default_type application/octet-stream;\n  \
         client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n  \
         fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  \
         scgi_temp_path {tmp}/scgi;\n  \
         server {{ listen {listen}; root {}; }}\n}}\n",
        www.display()
    )
}
