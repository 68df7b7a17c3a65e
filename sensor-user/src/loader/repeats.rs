//! Repeat windows that ended with a count no report carried. The kernel reports the first of
//! a window's identical network operations and counts the rest into the next report of the same
//! operation ([`RepeatKey`]); when none comes (the storm stopped), the count would stay in the
//! map. The agent sweeps it once per window: an entry whose window has ended is taken out of the
//! map in one step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`), so its count is reported by exactly one
//! side, and the next operation of that key opens a window of its own, reported at once as it
//! would have been. Taking every ended entry also keeps the sweep to the operations of the
//! last window or two.
//!
//! One race is left: an operation whose program looked the entry up just before the sweep took
//! it, and adds to (or reports) it just after, is lost (or counted twice). That needs an
//! operation within the few dozen nanoseconds the program holds the entry, on a key that was
//! idle for a whole window.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::Result;
use aya::maps::{HashMap, Map, MapData};
use sensor_common::{RepeatKey, RepeatState};

/// `bpf(2)` commands: `BPF_MAP_DELETE_ELEM`, and `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (Linux 5.14
/// for hash maps).
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The element part of `union bpf_attr`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// A repeat window that ended: its operation, and how many of them no report carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndedWindow {
    pub key: RepeatKey,
    pub count: u64,
}

/// The kernel's repeat windows (`REPEATS`).
pub struct RepeatWindows {
    map: Map,
    window_ns: u64,
    /// The kernel refused the atomic take (before 5.14): a read, then a delete.
    two_steps: bool,
}

impl RepeatWindows {
    pub fn new(map: Map, window_ns: u64) -> Self {
        Self {
            map,
            window_ns,
            two_steps: false,
        }
    }

    /// Takes every window that ended before `now_ns` (boot time) out of the map, and returns
    /// those that counted operations.
    pub fn take_ended(&mut self, now_ns: u64) -> Result<Vec<EndedWindow>> {
        if self.window_ns == 0 {
            return Ok(Vec::new());
        }
        let map: HashMap<&MapData, RepeatKey, RepeatState> = HashMap::try_from(&self.map)?;
        let data = map_data(&self.map);
        // Keys first: deleting while walking restarts a hash map's walk. A key the kernel
        // evicts under our walk restarts it too: bounded to twice the map's size.
        let bound = 2 * data.info()?.max_entries() as usize;
        let keys: Vec<RepeatKey> = map.keys().take(bound).filter_map(Result::ok).collect();
        let mut ended = Vec::new();
        for key in keys {
            let Ok(read) = map.get(&key, 0) else {
                continue;
            };
            if now_ns.saturating_sub(read.since_ns) < self.window_ns {
                continue;
            }
            let taken = if self.two_steps {
                None
            } else {
                let mut state = RepeatState::default();
                match elem_call(BPF_MAP_LOOKUP_AND_DELETE_ELEM, data, &key, &mut state) {
                    Ok(()) => Some(state),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => {
                        log::warn!(
                            "repeat windows: this kernel cannot look up and delete at once \
                             ({e}); reading, then deleting, which may lose an operation \
                             counted between the two"
                        );
                        self.two_steps = true;
                        None
                    }
                }
            };
            let state = match taken {
                Some(state) => state,
                None => {
                    let _ = elem_call(BPF_MAP_DELETE_ELEM, data, &key, &mut RepeatState::default());
                    read
                }
            };
            if state.suppressed > 0 {
                ended.push(EndedWindow {
                    key,
                    count: state.suppressed,
                });
            }
        }
        Ok(ended)
    }
}

/// The map's data (checked to be a hash map by the `HashMap::try_from` before).
fn map_data(map: &Map) -> &MapData {
    match map {
        Map::LruHashMap(data) | Map::HashMap(data) => data,
        _ => unreachable!("REPEATS is a hash map: HashMap::try_from checked it"),
    }
}

/// A `bpf(2)` element command on `map`'s `key`, reading into `value` where it reads.
fn elem_call(
    cmd: libc::c_long,
    map: &MapData,
    key: &RepeatKey,
    value: &mut RepeatState,
) -> std::io::Result<()> {
    let attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as *const RepeatKey as u64,
        value: value as *mut RepeatState as u64,
        flags: 0,
    };
    // SAFETY: `attr` names a live key and a value of the map's sizes, for the call's length.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
