//! The `sensor` command line.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use sensor::{
    agent::{self, RunOptions},
    deliver::cli::{DeliveryArgs, WatchArgs},
    detect::engine::AlertCap,
    enrich::runtime::RuntimeSocket,
};

#[derive(Parser)]
#[command(
    name = "sensor",
    version,
    about = "Container runtime threat sensor (eBPF)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the kernel and write every enriched event as a JSON line until Ctrl-C.
    Run(Box<RunArgs>),
    /// Report what this kernel offers and which hooks the sensor will use; non-zero if it can't run.
    Check,
    /// Stream alerts (or events) from a running sensor: compact lines for people, JSON for machines.
    Watch(WatchArgs),
    /// Detection rules: validate a rule directory, list the rules in force.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check every rule file of DIR (with the embedded catalog); errors name file:line:column.
    Validate { dir: std::path::PathBuf },
    /// List the rules in force: the embedded catalog, extended by --rules DIR.
    List {
        #[arg(long)]
        rules: Option<std::path::PathBuf>,
    },
    /// Print the detections document (ADS form) generated from the rules.
    Docs {
        #[arg(long)]
        rules: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where JSON lines go: `-` for stdout, or a file (appended to).
    #[arg(long, default_value = "-", value_name = "PATH|-")]
    json_out: String,
    /// Seconds between `health` events.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    health_interval: u64,
    /// Seconds between traffic and ICMP reports (kernel-aggregated counters).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    flow_interval: u64,
    /// Size of the process ring buffer in MiB (a power of two).
    #[arg(long, default_value_t = 8, value_parser = parse_ring_mib)]
    ring_mib: u32,
    /// Size of the network ring buffer in MiB (a power of two).
    #[arg(long, default_value_t = 4, value_parser = parse_ring_mib)]
    net_ring_mib: u32,
    /// Also report network activity of host processes (default: containers only; with it the
    /// traffic programs run on every packet of the node, not only containers' packets).
    #[arg(long)]
    net_host: bool,
    /// Network records per second each cgroup may emit before its records are dropped (and
    /// counted); 0 for no limit.
    #[arg(long, default_value_t = 2000)]
    net_rate: u32,
    /// Burst allowance above --net-rate, in records.
    #[arg(long, default_value_t = 4000)]
    net_burst: u32,
    /// Milliseconds within which a network operation identical to one reported (same process,
    /// operation, kind of socket and peer; an ephemeral port facing a service port aside) is
    /// not reported but counted: the next one reported carries the count (`repeats`), so a
    /// connect or accept storm between two services is a few events a second. 0 reports every
    /// operation.
    #[arg(long, default_value_t = 1000)]
    net_repeat_ms: u32,
    /// exec, fork and exit records per second each cgroup (container) may put on the process
    /// ring, so one container's exec or fork flood cannot cost another its events; what is
    /// refused is counted per cgroup in health (`cgroup_drops`). 0 = unlimited.
    #[arg(long, default_value_t = 5000)]
    proc_rate: u32,
    /// Burst allowance above --proc-rate, in records.
    #[arg(long, default_value_t = 10000)]
    proc_burst: u32,
    /// Hook set. `default` attaches no syscall tracepoint (no cost on syscalls the sensor does
    /// not watch) and watches bpf, ptrace, perf_event_open, mount, fsopen and socket() of the
    /// netlink and packet families on those syscalls' own kernel functions, by fentry, else
    /// kprobes (`fentry`, `kprobe`: one of them or fail; `tracepoint`: neither). On a kernel
    /// with neither, `syscall` watches them on syscall tracepoints instead, at the price of
    /// every syscall on the node taking the slow path. `sensor check` and the start-up line
    /// say which set this kernel gets and name the rules blind without it.
    #[arg(long, value_enum, env = "SENSOR_HOOKS", default_value_t)]
    hooks: sensor::loader::HookSet,
    /// Node name reported in events (default: the hostname).
    #[arg(long)]
    node: Option<String>,
    /// A directory of rule files (`*.yaml`, plus `macros.yaml`) that extend or override the
    /// embedded catalog by rule id; re-read on SIGHUP (a broken set is refused, the running one
    /// kept).
    #[arg(long, value_name = "DIR")]
    rules: Option<std::path::PathBuf>,
    /// The Docker Engine API socket, asked for container names, images and labels (`none`: do
    /// not ask). A socket that does not answer is a warning, not an error; so is a missing one
    /// named here (a missing default is a runtime this node does not run).
    #[arg(long, value_name = "PATH|none")]
    docker_socket: Option<String>,
    /// Podman's Docker-compatible API socket (`podman system service`), asked about podman's
    /// containers (`libpod-<id>` cgroups); `none`: do not ask. [default: /run/podman/podman.sock]
    #[arg(long, value_name = "PATH|none")]
    podman_socket: Option<String>,
    /// The Kubernetes CRI socket of containerd or CRI-O, asked about pods and their containers
    /// (pod name, namespace, uid, labels); `none`: do not ask. CRI-O listens on
    /// `/run/crio/crio.sock`. [default: /run/containerd/containerd.sock]
    #[arg(long, value_name = "PATH|none")]
    cri_socket: Option<String>,
    /// At most N alerts per rule and container in SECONDS (`N/SECONDS`); the ones beyond are
    /// held back, counted (health `rules[].suppressed`) and reported when the period ends in
    /// one "N more like this" alert (`suppressed` = how many). `0` turns the cap off.
    #[arg(long, default_value = "20/60", value_name = "N/SECONDS|0", value_parser = parse_alert_cap)]
    alert_cap: AlertCap,
    /// Where what the rules learn (ports each image listens on) is kept across restarts.
    /// Default: the spool directory's parent (/var/lib/sensor).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

impl RunArgs {
    fn options(self) -> RunOptions {
        let mut opts = RunOptions::new(self.node.unwrap_or_else(hostname));
        opts.delivery = self.delivery.config(&opts.node);
        opts.delivery.json_out = Some(self.json_out);
        opts.health_interval = Duration::from_secs(self.health_interval);
        opts.flow_interval = Duration::from_secs(self.flow_interval);
        opts.load.proc_ring_bytes = self.ring_mib << 20;
        opts.load.net_ring_bytes = self.net_ring_mib << 20;
        opts.load.filter.net_host = self.net_host as u32;
        opts.load.filter.net_rate_per_sec = self.net_rate;
        opts.load.filter.net_repeat_ms = self.net_repeat_ms;
        opts.load.filter.net_burst = self.net_burst.max(1);
        opts.load.filter.proc_rate_per_sec = self.proc_rate;
        opts.load.filter.proc_burst = self.proc_burst.max(1);
        opts.load.hook_set = self.hooks;
        opts.rules_dir = self.rules;
        opts.alert_cap = self.alert_cap;
        let sockets = &mut opts.runtime_sockets;
        for (given, socket) in [
            (self.docker_socket, &mut sockets.docker),
            (self.podman_socket, &mut sockets.podman),
            (self.cri_socket, &mut sockets.cri),
        ] {
            match given.as_deref() {
                None => {}
                Some("none") => *socket = None,
                Some(path) => *socket = Some(RuntimeSocket::named(path)),
            }
        }
        opts.state_dir = self.state_dir.unwrap_or_else(|| {
            let spool = &opts.delivery.spool.dir;
            spool.parent().unwrap_or(spool).to_path_buf()
        });
        opts
    }
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of MiB"))?;
    if !(1..=1024).contains(&v) || !v.is_power_of_two() {
        return Err(format!(
            "{v} MiB: the ring size must be a power of two from 1 to 1024"
        ));
    }
    Ok(v)
}

fn parse_alert_cap(s: &str) -> Result<AlertCap, String> {
    if s == "0" {
        return Ok(AlertCap {
            limit: 0,
            seconds: 1.0,
        });
    }
    let bad = || format!("`{s}`: write N/SECONDS (for example 20/60), or 0 for no cap");
    let (n, secs) = s.split_once('/').ok_or_else(bad)?;
    let limit: u32 = n.parse().map_err(|_| bad())?;
    let seconds: u32 = secs.parse().map_err(|_| bad())?;
    if limit == 0 || seconds == 0 {
        return Err(bad());
    }
    Ok(AlertCap {
        limit,
        seconds: seconds as f64,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    sensor::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check => sensor::loader::check::run(),
        Command::Rules(cmd) => rules_command(cmd),
        Command::Watch(args) => args.run(),
        Command::Run(args) => {
            let opts = args.options();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                // The agent loop runs as a worker task, not on the thread that blocks on
                // the runtime: a ring-buffer wakeup then runs it on the worker that polled
                // epoll instead of unparking the main thread (one futex wake and context
                // switch fewer per wakeup).
                .and_then(|rt| rt.block_on(async { tokio::spawn(agent::run(opts)).await? }))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sensor: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `sensor rules validate|list`.
fn rules_command(cmd: RulesCommand) -> anyhow::Result<()> {
    use sensor::detect::catalog;
    match cmd {
        RulesCommand::Validate { dir } => {
            let mut files = catalog::embedded_files();
            files.extend(catalog::dir_files(&dir)?);
            match catalog::compile_all(&files) {
                Ok(rules) => {
                    println!(
                        "ok: {} rules (version {})",
                        rules.len(),
                        catalog::version(&rules)
                    );
                    Ok(())
                }
                Err(errors) => {
                    for e in &errors {
                        println!("{e}");
                    }
                    anyhow::bail!("{} rule file error(s) in {}", errors.len(), dir.display())
                }
            }
        }
        RulesCommand::Docs { rules } => {
            print!(
                "{}",
                sensor::detect::docs::markdown(&catalog::load(rules.as_deref())?)
            );
            Ok(())
        }
        RulesCommand::List { rules } => {
            let rules = catalog::load(rules.as_deref())?;
            for r in &rules {
                let d = &r.doc;
                println!(
                    "{:<8} {:<9} {:<28} {}",
                    d.id,
                    d.severity.short_name(),
                    d.attack.techniques.join(","),
                    d.name
                );
            }
            println!(
                "{} rules, version {}",
                rules.len(),
                catalog::version(&rules)
            );
            Ok(())
        }
    }
}
