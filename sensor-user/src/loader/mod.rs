//! Loading the embedded eBPF object into the running kernel and attaching its hooks.
//!
//! Offsets come from BTF and tracefs at load time ([`offsets::resolve`]); the object is embedded
//! in the binary by the build script. Dropping a [`LoadedSensor`] detaches everything.

pub mod btf;
pub mod check;
pub mod offsets;
pub mod tracefs;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use sensor_common::Hook;

/// The eBPF object built by `cargo xtask build` (empty when the agent was built without it).
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor.bpf.o"));

/// How a hook attaches.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    TracePoint {
        category: &'static str,
        name: &'static str,
    },
    RawTracePoint {
        name: &'static str,
    },
}

impl std::fmt::Display for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attach::TracePoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            Attach::RawTracePoint { name } => write!(f, "raw_tracepoint {name}"),
        }
    }
}

/// One hook: which program implements it and where it attaches.
#[derive(Clone, Copy, Debug)]
pub struct HookSpec {
    pub hook: Hook,
    pub name: &'static str,
    pub program: &'static str,
    pub attach: Attach,
}

/// The default hook set: tracepoints and raw tracepoints, which every kernel with BTF has.
pub const HOOKS: &[HookSpec] = &[
    HookSpec {
        hook: Hook::Exec,
        name: "exec",
        program: "sched_process_exec",
        attach: Attach::TracePoint {
            category: "sched",
            name: "sched_process_exec",
        },
    },
    HookSpec {
        hook: Hook::Fork,
        name: "fork",
        program: "sched_process_fork",
        attach: Attach::RawTracePoint {
            name: "sched_process_fork",
        },
    },
    HookSpec {
        hook: Hook::Exit,
        name: "exit",
        program: "sched_process_exit",
        attach: Attach::TracePoint {
            category: "sched",
            name: "sched_process_exit",
        },
    },
    HookSpec {
        hook: Hook::CgroupMkdir,
        name: "cgroup_mkdir",
        program: "cgroup_mkdir",
        attach: Attach::TracePoint {
            category: "cgroup",
            name: "cgroup_mkdir",
        },
    },
    HookSpec {
        hook: Hook::CgroupRmdir,
        name: "cgroup_rmdir",
        program: "cgroup_rmdir",
        attach: Attach::TracePoint {
            category: "cgroup",
            name: "cgroup_rmdir",
        },
    },
];

/// Kernel-side counters, read by the health reporter.
pub struct KernelCounters {
    pub ring_drops: PerCpuArray<MapData, u64>,
    pub hook_errors: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    fn sum(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
        map.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
    pub fn ring_drops(&self, ring: u32) -> u64 {
        Self::sum(&self.ring_drops, ring)
    }
    pub fn hook_errors(&self, hook: u32) -> u64 {
        Self::sum(&self.hook_errors, hook)
    }
}

/// Programs loaded and attached; dropping it detaches them.
pub struct LoadedSensor {
    ebpf: Ebpf,
    pub hooks: Vec<HookSpec>,
}

/// Options for [`LoadedSensor::load`].
pub struct LoadOptions {
    /// Size of the process ring buffer in bytes (a power of two, multiple of the page size).
    pub proc_ring_bytes: u32,
}

/// The embedded object, or an error saying how to build it.
pub fn bpf_object() -> Result<&'static [u8]> {
    if BPF_OBJECT.is_empty() {
        bail!(
            "this sensor binary was built without its eBPF programs; build it with `cargo xtask build` \
             (which compiles sensor-ebpf and embeds it)"
        );
    }
    Ok(BPF_OBJECT)
}

/// Loads the object with offsets for this kernel, without loading any program yet.
pub fn open() -> Result<(Ebpf, btf::KernelBtf)> {
    open_with(&LoadOptions {
        proc_ring_bytes: 8 << 20,
    })
}

fn open_with(opts: &LoadOptions) -> Result<(Ebpf, btf::KernelBtf)> {
    let object = bpf_object()?;
    let tracefs = tracefs::ensure_tracefs()?;
    let kbtf = btf::KernelBtf::load()?;
    let offsets = offsets::resolve(&kbtf, tracefs)?;
    let ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("PROC_EVENTS", opts.proc_ring_bytes)
        .load(object)
        .context("loading the sensor's eBPF object into the kernel")?;
    Ok((ebpf, kbtf))
}

/// Loads and attaches one hook's program.
pub fn attach(ebpf: &mut Ebpf, spec: &HookSpec) -> Result<()> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| anyhow!("program `{}` missing from the eBPF object", spec.program))?;
    let what = || format!("hook `{}` ({})", spec.name, spec.attach);
    match spec.attach {
        Attach::TracePoint { category, name } => {
            let p: &mut TracePoint = program.try_into().with_context(what)?;
            p.load().with_context(|| format!("loading {}", what()))?;
            p.attach(category, name)
                .with_context(|| format!("attaching {}", what()))?;
        }
        Attach::RawTracePoint { name } => {
            let p: &mut RawTracePoint = program.try_into().with_context(what)?;
            p.load().with_context(|| format!("loading {}", what()))?;
            p.attach(name)
                .with_context(|| format!("attaching {}", what()))?;
        }
    }
    Ok(())
}

impl LoadedSensor {
    /// Loads the object and attaches every hook of the default set.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let (mut ebpf, _btf) = open_with(opts)?;
        for spec in HOOKS {
            attach(&mut ebpf, spec)?;
        }
        Ok(Self {
            ebpf,
            hooks: HOOKS.to_vec(),
        })
    }

    /// The process/lifecycle ring buffer (can be taken once).
    pub fn take_proc_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("PROC_EVENTS")
            .ok_or_else(|| anyhow!("PROC_EVENTS map missing or already taken"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The drop and error counters (can be taken once).
    pub fn take_counters(&mut self) -> Result<KernelCounters> {
        let mut take = |name: &str| -> Result<PerCpuArray<MapData, u64>> {
            let map = self
                .ebpf
                .take_map(name)
                .ok_or_else(|| anyhow!("{name} map missing or already taken"))?;
            Ok(PerCpuArray::try_from(map)?)
        };
        Ok(KernelCounters {
            ring_drops: take("RING_DROPS")?,
            hook_errors: take("HOOK_ERRORS")?,
        })
    }
}
