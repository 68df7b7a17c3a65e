//! Loading the embedded eBPF object into the running kernel and attaching its hooks.
//!
//! Offsets come from BTF and tracefs at load time ([`offsets::resolve`]); the object is embedded
//! in the binary by the build script. Dropping a [`LoadedSensor`] detaches everything.

pub mod btf;
pub mod check;
pub mod hooks;
pub mod interfaces;
mod listeners;
pub mod offsets;
mod qdisc;
mod repeats;
pub mod tracefs;
mod traffic;

use anyhow::{Context, Result, anyhow, bail};
use std::fs::File;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSock, CgroupSockAddr, FEntry, FExit,
        KProbe, Program, SchedClassifier, TracePoint,
    },
};
use sensor_common::{
    DROP_REASONS, DropKey, DropReason, FilterConfig, FlowKey, FlowStats, HOOK_ERROR_KINDS,
    HookError, IcmpKey, IcmpStats, Ring, SELF_GROUP, SELF_TASK, TcIcmpKey,
};

use crate::cgroupfs::cgroup2_mount;

/// The eBPF object built by `cargo xtask build` (empty when the agent was built without it).
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor.bpf.o"));

pub use hooks::{
    Attach, FALLBACK_ADVICE, Function, FunctionProbe, HookSet, HookSpec, default_hooks, grouped,
    variant_hooks,
};
pub use repeats::{EndedWindow, RepeatWindows};

/// Kernel-side counters, read by the health reporter.
pub struct KernelCounters {
    pub ring_drops: PerCpuArray<MapData, u64>,
    pub hook_errors: PerCpuArray<MapData, u64>,
    /// Drops per cgroup, ring and reason (LRU in the kernel).
    pub cgroup_drops: PerCpuHashMap<MapData, DropKey, u64>,
}

impl KernelCounters {
    fn sum(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
        map.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
    pub fn ring_drops(&self, ring: u32, reason: DropReason) -> u64 {
        Self::sum(&self.ring_drops, ring * DROP_REASONS + reason as u32)
    }
    /// `hook`'s failures by why, the kinds that occurred only.
    pub fn hook_errors(&self, hook: u32) -> Vec<(HookError, u64)> {
        HookError::ALL
            .into_iter()
            .map(|why| {
                let slot = hook * HOOK_ERROR_KINDS + why as u32;
                (why, Self::sum(&self.hook_errors, slot))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
    /// Each ring's drops since start, as `(ring, reason, total)`.
    pub fn ring_totals(&self) -> Vec<(u32, u32, u64)> {
        [Ring::Process, Ring::Network]
            .into_iter()
            .flat_map(|ring| {
                [DropReason::RingFull, DropReason::RateLimited].map(|reason| {
                    (
                        ring as u32,
                        reason as u32,
                        self.ring_drops(ring as u32, reason),
                    )
                })
            })
            .collect()
    }

    /// Every cgroup's drops, summed over the CPUs.
    pub fn cgroup_drops(&self) -> Vec<(DropKey, u64)> {
        self.cgroup_drops
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| (key, per_cpu.iter().sum()))
            .collect()
    }
}

/// Programs loaded and attached; dropping it detaches them.
pub struct LoadedSensor {
    ebpf: Ebpf,
    pub hooks: Vec<HookSpec>,
    /// The hook set in use: never `default`, which resolves at load.
    pub hook_set: HookSet,
    interfaces: interfaces::Interfaces,
    traffic: traffic::TrafficCgroups,
    self_filter: Option<SelfFilter>,
}

/// Options for [`LoadedSensor::load`].
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Size of the process ring buffer in bytes (a power of two, multiple of the page size).
    pub proc_ring_bytes: u32,
    /// Size of the network ring buffer in bytes.
    pub net_ring_bytes: u32,
    pub filter: FilterConfig,
    /// The hook set asked for (`default`: resolved at load, see [`HookSet::candidates`]).
    pub hook_set: HookSet,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            proc_ring_bytes: 8 << 20,
            net_ring_bytes: 4 << 20,
            filter: FilterConfig::default_const(),
            hook_set: HookSet::Default,
        }
    }
}

/// The in-kernel aggregation maps user space reads periodically.
pub struct AggregationMaps {
    pub flows: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    pub icmp: HashMap<MapData, IcmpKey, IcmpStats>,
    pub tc_icmp: HashMap<MapData, TcIcmpKey, IcmpStats>,
}

/// One read of the kernel's aggregation maps, summed over the CPUs.
#[derive(Default)]
pub struct AggregateSnapshot {
    pub flows: Vec<(FlowKey, FlowStats)>,
    pub icmp: Vec<(IcmpKey, IcmpStats)>,
    pub tc_icmp: Vec<(TcIcmpKey, IcmpStats)>,
}

impl AggregationMaps {
    /// Reads every map once. An entry the kernel evicts mid-read is skipped; its counts are
    /// cumulative, so nothing is lost for entries that live on.
    pub fn snapshot(&self) -> AggregateSnapshot {
        let flows = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| {
                let mut total = FlowStats::default();
                per_cpu.iter().for_each(|v| total.add(v));
                (k, total)
            })
            .collect();
        AggregateSnapshot {
            flows,
            icmp: self.icmp.iter().filter_map(Result::ok).collect(),
            tc_icmp: self.tc_icmp.iter().filter_map(Result::ok).collect(),
        }
    }
}

/// cgroups whose network activity the kernel does not report (the host's).
pub struct HostCgroupFilter {
    map: HashMap<MapData, u64, u8>,
}

impl HostCgroupFilter {
    pub fn mark_host(&mut self, cgroup_id: u64) -> Result<()> {
        self.map
            .insert(cgroup_id, 1, 0)
            .context("updating HOST_CGROUPS")
    }
    pub fn forget(&mut self, cgroup_id: u64) {
        let _ = self.map.remove(&cgroup_id);
    }
}

/// The sensor's own threads and process group, as the kernel's `SENSOR_TASKS` map knows them:
/// signals and ptrace aimed at them are reported, and the sensor's own calls are not.
pub struct SelfFilter {
    map: HashMap<MapData, u32, u8>,
    /// What the map holds.
    current: std::collections::HashMap<u32, u8>,
}

impl SelfFilter {
    /// Brings the map up to date with `/proc/self/task` and the process group: threads come
    /// and go (tokio's blocking pool), so the agent calls this periodically.
    pub fn refresh(&mut self) -> Result<()> {
        let mut want: std::collections::HashMap<u32, u8> = std::fs::read_dir("/proc/self/task")
            .context("listing /proc/self/task")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .map(|tid| (tid, SELF_TASK))
            .collect();
        // SAFETY: getpgrp has no arguments and cannot fail.
        let pgid = unsafe { libc::getpgrp() } as u32;
        *want.entry(pgid).or_default() |= SELF_GROUP;
        for (id, role) in &want {
            if self.current.get(id) != Some(role) {
                self.map
                    .insert(id, role, 0)
                    .with_context(|| format!("adding {id} to SENSOR_TASKS"))?;
            }
        }
        for id in self.current.keys().filter(|id| !want.contains_key(id)) {
            let _ = self.map.remove(id);
        }
        self.current = want;
        Ok(())
    }
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

/// Loads the object with offsets for this kernel, without loading any program yet. Also gives
/// the kernel's BTF as aya parsed it, which fentry and fexit programs are loaded against: the
/// caller drops it once its programs are loaded (tens of MiB the agent no longer needs).
pub fn open() -> Result<(Ebpf, aya::Btf)> {
    open_with(&LoadOptions::default())
}

fn open_with(opts: &LoadOptions) -> Result<(Ebpf, aya::Btf)> {
    let object = bpf_object()?;
    let tracefs = tracefs::ensure_tracefs()?;
    // Parsed for the offsets and dropped before aya parses the same BTF (each parse holds
    // tens of MiB: the agent's peak RSS).
    let offsets = offsets::resolve(&btf::KernelBtf::load()?, tracefs)?;
    let kernel =
        aya::Btf::from_sys_fs().map_err(|e| anyhow!("reading the kernel's BTF with aya: {e}"))?;
    let ebpf = EbpfLoader::new()
        .btf(Some(&kernel))
        .override_global("OFFSETS", &offsets, true)
        .override_global("FILTER", &opts.filter, true)
        .map_max_entries("PROC_EVENTS", opts.proc_ring_bytes)
        .map_max_entries("NET_EVENTS", opts.net_ring_bytes)
        .load(object)
        .context("loading the sensor's eBPF object into the kernel")?;
    Ok((ebpf, kernel))
}

/// Loads and attaches one hook's program (`btf`: the kernel's, from [`open`]).
pub fn attach(ebpf: &mut Ebpf, btf: &aya::Btf, spec: &HookSpec) -> Result<()> {
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
        Attach::BtfTracePoint { name } => {
            let p: &mut BtfTracePoint = program.try_into().with_context(what)?;
            p.load(name, btf)
                .with_context(|| format!("loading {}", what()))?;
            p.attach()
                .with_context(|| format!("attaching {}", what()))?;
        }
        Attach::Tc { .. } => {
            // Loaded here; attached per interface by `interfaces::Interfaces::sync`.
            let p: &mut SchedClassifier = program.try_into().with_context(what)?;
            p.load().with_context(|| format!("loading {}", what()))?;
        }
        Attach::CgroupSock { attach } => {
            let p: &mut CgroupSock = program.try_into().with_context(what)?;
            p.load().with_context(|| format!("loading {}", what()))?;
            p.attach(cgroup_root(attach)?, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {}", what()))?;
        }
        Attach::CgroupSockAddr { attach } => {
            let p: &mut CgroupSockAddr = program.try_into().with_context(what)?;
            p.load().with_context(|| format!("loading {}", what()))?;
            p.attach(cgroup_root(attach)?, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {}", what()))?;
        }
        Attach::CgroupSkb { .. } => {
            // Loaded here; attached per container cgroup by `traffic::TrafficCgroups`.
            let p: &mut CgroupSkb = program.try_into().with_context(what)?;
            p.load().with_context(|| format!("loading {}", what()))?;
        }
        Attach::Function { probe, function } => {
            let function = function.symbol()?;
            let loading = || format!("loading {}", what());
            let attaching = || format!("attaching {}", what());
            match probe {
                FunctionProbe::FEntry => {
                    let p: &mut FEntry = program.try_into().with_context(what)?;
                    p.load(&function, btf).with_context(loading)?;
                    p.attach().with_context(attaching)?;
                }
                FunctionProbe::FExit => {
                    let p: &mut FExit = program.try_into().with_context(what)?;
                    p.load(&function, btf).with_context(loading)?;
                    p.attach().with_context(attaching)?;
                }
                FunctionProbe::KProbe | FunctionProbe::KRetProbe => {
                    let p: &mut KProbe = program.try_into().with_context(what)?;
                    p.load().with_context(loading)?;
                    p.attach(&function, 0).with_context(attaching)?;
                }
            }
        }
    }
    Ok(())
}

/// Attaches a resolved hook set's own programs (an optional one that fails is left out, with
/// its warning); on another failure, unloads those it had loaded (detaching them) and says
/// which failed.
fn attach_variant(ebpf: &mut Ebpf, btf: &aya::Btf, set: HookSet) -> Result<Vec<HookSpec>> {
    let specs = variant_hooks(set);
    let mut attached = Vec::new();
    for spec in &specs {
        match attach(ebpf, btf, spec) {
            Ok(()) => attached.push(*spec),
            Err(e) => match spec.optional {
                Some(why) => log::warn!("{why} ({})", describe(&e)),
                None => {
                    for done in attached.iter().chain([spec]) {
                        unload(ebpf, done.program);
                    }
                    return Err(e);
                }
            },
        }
    }
    Ok(attached)
}

/// Detaches and unloads one function or tracepoint program (a hook set given up on).
fn unload(ebpf: &mut Ebpf, name: &str) {
    let _ = match ebpf.program_mut(name) {
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::TracePoint(p)) => p.unload(),
        _ => Ok(()),
    };
}

/// Resolves `asked` to the first of its candidates whose programs attach: the resolved set
/// and its programs. `--hooks default` falls back from fentry to kprobes to none (logging
/// why); an explicit set that does not attach is an error.
fn attach_hook_set(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    asked: HookSet,
) -> Result<(HookSet, Vec<HookSpec>)> {
    let candidates = asked.candidates();
    for (i, &set) in candidates.iter().enumerate() {
        match attach_variant(ebpf, btf, set) {
            Ok(specs) => return Ok((set, specs)),
            Err(e) if i + 1 < candidates.len() => {
                log::info!(
                    "hook set {set} not usable here, trying the next: {}",
                    describe(&e)
                );
            }
            Err(e) => {
                return Err(e.context(format!("--hooks {asked} is not usable on this kernel")));
            }
        }
    }
    unreachable!("every hook set has a candidate")
}

/// The cgroup2 root, opened for attaching a cgroup program (`what` names it in the error).
fn cgroup_root(what: &str) -> Result<File> {
    let root = cgroup2_mount().with_context(|| format!("no cgroup2 mount to attach {what} to"))?;
    File::open(&root).with_context(|| format!("opening {}", root.display()))
}

/// The loaded program `name` as its type `P` (the programs attached per cgroup or interface as
/// they come and go).
fn program_as<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing"))?
        .try_into()
        .map_err(anyhow::Error::from)
}

/// An error chain on one line, without aya's empty "Verifier output:" tail.
pub fn describe(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .replace(". Verifier output: :", ":")
        .replace(". Verifier output: ", "")
}

impl LoadedSensor {
    /// Loads the object, attaches every hook of the default set, then the fallback if asked.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let (mut ebpf, btf) = open_with(opts)?;
        // First, so that the sensor's own bpf() calls while attaching are not reported.
        let mut self_filter = SelfFilter {
            map: HashMap::try_from(
                ebpf.take_map("SENSOR_TASKS")
                    .ok_or_else(|| anyhow!("SENSOR_TASKS map missing from the object"))?,
            )?,
            current: Default::default(),
        };
        self_filter.refresh()?;
        let mut hooks = Vec::new();
        for spec in default_hooks() {
            match attach(&mut ebpf, &btf, &spec) {
                Ok(()) => hooks.push(spec),
                Err(e) => match spec.left_out() {
                    Some(why) => log::warn!("{why} ({})", describe(&e)),
                    None => return Err(e),
                },
            }
        }
        let (hook_set, variant) = attach_hook_set(&mut ebpf, &btf, opts.hook_set)?;
        drop(btf);
        hooks.extend(variant);
        let mut sensor = Self {
            ebpf,
            hooks,
            hook_set,
            interfaces: Default::default(),
            traffic: Default::default(),
            self_filter: Some(self_filter),
        };
        let counts_traffic =
            (sensor.hooks.iter()).any(|h| matches!(h.attach, Attach::CgroupSkb { .. }));
        if counts_traffic {
            let mount = traffic_mount()?;
            let (ebpf, hooks) = (&mut sensor.ebpf, &sensor.hooks);
            if opts.filter.net_host != 0 {
                // The host's traffic is watched too: once, on the root.
                sensor.traffic.watch(ebpf, hooks, &mount, "/")?;
            } else {
                sensor.traffic.watch_runtime_parents(ebpf, hooks, &mount)?;
            }
        }
        for error in sensor.sync_interfaces() {
            log::warn!("{error}");
        }
        // After the TCP state hook attached, so no listener falls between the two.
        if let Err(e) = sensor.seed_listeners() {
            log::warn!(
                "listeners opened before the sensor started: their accepts go unreported: {e:#}"
            );
        }
        Ok(sensor)
    }

    /// Teaches the kernel the listening sockets opened before the sensor started.
    fn seed_listeners(&mut self) -> Result<usize> {
        let mount = cgroup2_mount().context("no cgroup2 mount")?;
        let map = self
            .ebpf
            .map_mut("LISTENERS")
            .ok_or_else(|| anyhow!("LISTENERS map missing from the object"))?;
        let mut map = HashMap::try_from(map)?;
        listeners::seed(&mut map, &mount)
    }

    /// Attaches the TC classifiers to interfaces that appeared; returns new failures.
    pub fn sync_interfaces(&mut self) -> Vec<String> {
        self.interfaces.sync(&mut self.ebpf, &self.hooks)
    }

    /// A container's cgroup `dir` (relative to the cgroup2 mount) started: the traffic programs
    /// go on the cgroup that holds it (see [`traffic`]).
    pub fn watch_traffic(&mut self, dir: &str) -> Result<()> {
        let mount = traffic_mount()?;
        let holder = traffic::holder(dir);
        (self.traffic).watch(&mut self.ebpf, &self.hooks, &mount, holder)
    }

    /// Detaches the traffic programs from the cgroup `dir` (its container exited).
    pub fn unwatch_traffic(&mut self, dir: &str) {
        self.traffic.unwatch(&mut self.ebpf, dir);
    }

    /// How many cgroups the traffic programs are attached to.
    pub fn traffic_cgroups(&self) -> usize {
        self.traffic.len()
    }

    /// ifindex -> name of the interfaces the TC classifiers watch.
    pub fn interface_names(&self) -> &std::collections::HashMap<u32, String> {
        self.interfaces.names()
    }

    fn take(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf
            .take_map(name)
            .ok_or_else(|| anyhow!("{name} map missing from the object or already taken"))
    }

    /// The process/lifecycle ring buffer (can be taken once).
    pub fn take_proc_ring(&mut self) -> Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(self.take("PROC_EVENTS")?)?)
    }

    /// The network ring buffer (can be taken once).
    pub fn take_net_ring(&mut self) -> Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(self.take("NET_EVENTS")?)?)
    }

    /// The traffic and ICMP aggregation maps (can be taken once).
    pub fn take_aggregation(&mut self) -> Result<AggregationMaps> {
        Ok(AggregationMaps {
            flows: PerCpuHashMap::try_from(self.take("FLOWS")?)?,
            icmp: HashMap::try_from(self.take("ICMP")?)?,
            tc_icmp: HashMap::try_from(self.take("TC_ICMP")?)?,
        })
    }

    /// The repeat windows of network records, `window_ns` long (can be taken once).
    pub fn take_repeat_windows(&mut self, window_ns: u64) -> Result<RepeatWindows> {
        Ok(RepeatWindows::new(self.take("REPEATS")?, window_ns))
    }

    /// The host cgroup filter (can be taken once).
    pub fn take_host_filter(&mut self) -> Result<HostCgroupFilter> {
        Ok(HostCgroupFilter {
            map: HashMap::try_from(self.take("HOST_CGROUPS")?)?,
        })
    }

    /// The sensor's own task map, filled before any hook attached (can be taken once).
    pub fn take_self_filter(&mut self) -> Result<SelfFilter> {
        self.self_filter
            .take()
            .ok_or_else(|| anyhow!("the sensor's own task map was already taken"))
    }

    /// The drop and error counters (can be taken once).
    pub fn take_counters(&mut self) -> Result<KernelCounters> {
        Ok(KernelCounters {
            ring_drops: PerCpuArray::try_from(self.take("RING_DROPS")?)?,
            hook_errors: PerCpuArray::try_from(self.take("HOOK_ERRORS")?)?,
            cgroup_drops: PerCpuHashMap::try_from(self.take("CGROUP_DROPS")?)?,
        })
    }
}

/// The cgroup2 mount the traffic programs attach under.
fn traffic_mount() -> Result<std::path::PathBuf> {
    cgroup2_mount().context("no cgroup2 mount to attach traffic accounting to")
}
