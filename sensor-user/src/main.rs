//! The `sensor` command line.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use sensor::agent::{self, RunOptions};

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
    Run {
        /// Where JSON lines go: `-` for stdout, or a file (appended to).
        #[arg(long, default_value = "-", value_name = "PATH|-")]
        json_out: String,
        /// Seconds between `health` events.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        health_interval: u64,
        /// Size of the process ring buffer in MiB (a power of two).
        #[arg(long, default_value_t = 8, value_parser = parse_ring_mib)]
        ring_mib: u32,
        /// Node name reported in events (default: the hostname).
        #[arg(long)]
        node: Option<String>,
    },
    /// Report what this kernel offers and which hooks the sensor will use; non-zero if it can't run.
    Check,
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check => sensor::loader::check::run(),
        Command::Run {
            json_out,
            health_interval,
            ring_mib,
            node,
        } => {
            let opts = RunOptions {
                json_out,
                health_interval: Duration::from_secs(health_interval),
                proc_ring_bytes: ring_mib << 20,
                node: node.unwrap_or_else(hostname),
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(agent::run(opts)))
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
