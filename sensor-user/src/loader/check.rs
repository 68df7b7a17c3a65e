//! `sensor check`: what this kernel offers and which hooks the sensor will use, by probing
//! (loading and attaching real programs), never by guessing from the version number.

use std::{fmt::Write as _, path::Path};

use anyhow::{Result, bail};
use aya::{
    Ebpf,
    programs::{FEntry, KProbe},
};

use super::{
    Attach, FALLBACK_ADVICE, HookSet, HookSpec, attach, btf::VMLINUX_BTF, default_hooks, grouped,
    open, tracefs, variant_hooks,
};
use crate::{detect, privileges};

/// One probed capability.
pub struct Probe {
    pub what: &'static str,
    pub result: Result<String, String>,
}

/// Runs every probe, prints the report, and fails with a one-line reason when the sensor cannot
/// run here.
pub fn run() -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel:      {}", kernel.trim());
    let btf = Path::new(VMLINUX_BTF).exists();
    println!("btf:         {}", if btf { VMLINUX_BTF } else { "missing" });
    let root = privileges::euid() == 0;
    println!(
        "privileges:  {}",
        if root {
            "root".to_string()
        } else {
            format!("uid {} (not root)", privileges::euid())
        }
    );
    if !root {
        bail!("cannot run here: not root; run `sudo sensor check`");
    }
    let tracefs = tracefs::ensure_tracefs();
    println!(
        "tracefs:     {}",
        tracefs
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| format!("{e:#}"))
    );
    if !btf {
        bail!(
            "cannot run here: the kernel has no BTF at {VMLINUX_BTF} (needs CONFIG_DEBUG_INFO_BTF=y)"
        );
    }
    if let Err(e) = tracefs {
        bail!("cannot run here: no tracefs: {e:#}");
    }

    let (mut ebpf, btf) = open()?;
    let hooks = default_hooks();
    let mut failed: Vec<(&str, String)> = Vec::new();
    let mut absent: Vec<(&str, &str)> = Vec::new();
    for spec in &hooks {
        if let Err(e) = attach(&mut ebpf, &btf, spec) {
            match spec.left_out() {
                Some(why) => absent.push((spec.name, why)),
                None => failed.push((spec.name, super::describe(&e))),
            }
        }
    }
    let mut report = String::new();
    for (_, name, attach_points) in grouped(&hooks) {
        match (
            failed.iter().find(|(n, _)| *n == name),
            absent.iter().find(|(n, _)| *n == name),
        ) {
            (Some((_, err)), _) => writeln!(report, "  {name:<15} FAILED: {err}")?,
            (None, Some((_, why))) => writeln!(report, "  {name:<15} left out: {why}")?,
            (None, None) => writeln!(report, "  {name:<15} usable: {attach_points}")?,
        }
    }

    // What `--hooks default` resolves to here: the programs stay attached, so the fallback
    // below is tried beside them (both sets can be loaded at once).
    let functions = super::attach_hook_set(&mut ebpf, &btf, HookSet::Default);
    let fallback = variant_hooks(HookSet::Syscall)
        .iter()
        .try_for_each(|spec| attach(&mut ebpf, &btf, spec))
        .map_err(|e| super::describe(&e));
    println!("program types:");
    let probes = probe_program_types(&mut ebpf, &btf, &hooks, &failed);
    for p in &probes {
        match &p.result {
            Ok(how) => println!("  {:<15} usable: {how}", p.what),
            Err(why) => println!("  {:<15} unavailable: {why}", p.what),
        }
    }
    println!("hooks in use (no syscall tracepoint):");
    print!("{report}");
    let resolved = match &functions {
        Ok((set, specs)) => {
            for (_, name, attach_points) in grouped(specs) {
                println!("  {name:<15} usable: {attach_points}");
            }
            *set
        }
        Err(e) => bail!("cannot run here: {}", super::describe(e)),
    };
    println!(
        "hook set: {resolved}{}",
        match resolved {
            HookSet::Tracepoint =>
                " (no fentry or kprobes: bpf, ptrace, perf_event_open, mount, \
                 fsopen and socket() of other families are not watched)",
            _ =>
                " (bpf, ptrace, perf_event_open, mount, fsopen and socket() of other families \
                 on their own kernel functions: only those syscalls pay)",
        }
    );
    let rules = detect::catalog::load(None)?;
    let engine = detect::engine::Engine::new(rules, String::new());
    let blind = engine.blind_rules(resolved.blind_kinds());
    println!(
        "syscall fallback (--hooks syscall, off by default): {}",
        match &fallback {
            Ok(()) => "usable".to_string(),
            Err(e) => format!("unavailable: {e}"),
        }
    );
    println!(
        "  blind without it: {}",
        if blind.is_empty() {
            "none".to_string()
        } else {
            blind.join("; ")
        }
    );
    if resolved == HookSet::Tracepoint {
        println!(
            "  and socket events of the netlink and packet families (CRS-004's netlink clause)"
        );
        println!("  {FALLBACK_ADVICE}");
    }
    let optional: Vec<&str> = probes
        .iter()
        .filter(|p| p.result.is_err())
        .map(|p| p.what)
        .collect();
    if !optional.is_empty() {
        println!("not used here: {} (see reasons above)", optional.join(", "));
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(n, _)| *n).collect();
        bail!(
            "cannot run here: hooks {} failed to attach (see above)",
            names.join(", ")
        );
    }
    println!("ok: the sensor can run on this kernel");
    Ok(())
}

/// The result for a program type: what the default hooks of that type did, else a probe load.
fn probe_program_types(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    hooks: &[HookSpec],
    failed: &[(&str, String)],
) -> Vec<Probe> {
    let by_kind = |what: &'static str, is: fn(&Attach) -> bool| -> Probe {
        let Some(h) = hooks.iter().find(|h| is(&h.attach)) else {
            return Probe {
                what,
                result: Err("no hook of this type in the default set".into()),
            };
        };
        let result = match failed.iter().find(|(n, _)| *n == h.name) {
            Some((_, err)) => Err(err.clone()),
            None => Ok(format!("{} attached", h.attach)),
        };
        Probe { what, result }
    };
    let mut probes = vec![
        by_kind("tracepoint", |a| matches!(a, Attach::TracePoint { .. })),
        by_kind("tp_btf", |a| matches!(a, Attach::BtfTracePoint { .. })),
        by_kind("cgroup_skb", |a| matches!(a, Attach::CgroupSkb { .. })),
    ];
    probes.push(Probe {
        what: "kprobe",
        result: (|| {
            let p: &mut KProbe = program(ebpf, "feature_kprobe")?;
            p.load()
                .map_err(|e| format!("load: {}", super::describe(&e.into())))?;
            p.attach("do_exit", 0).map_err(|e| {
                let pmu = Path::new("/sys/bus/event_source/devices/kprobe").exists();
                let hint = if pmu {
                    ""
                } else {
                    " (no kprobe PMU: the kernel is built without CONFIG_KPROBES)"
                };
                format!("attach to do_exit: {e:#}{hint}")
            })?;
            Ok("kprobe do_exit attached".into())
        })(),
    });
    probes.push(Probe {
        what: "fentry",
        result: (|| {
            let p: &mut FEntry = program(ebpf, "feature_fentry")?;
            p.load("do_exit", btf)
                .map_err(|e| format!("load: {}", super::describe(&e.into())))?;
            p.attach().map_err(|e| format!("attach: {e:#}"))?;
            Ok("fentry do_exit attached".into())
        })(),
    });
    probes
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    p.try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}
