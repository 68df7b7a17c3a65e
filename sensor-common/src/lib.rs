//! Records shared by the eBPF programs and the agent.
//!
//! Every record written to a ring buffer starts with a [`RecordHeader`] whose `version` is
//! [`RECORD_VERSION`] and whose `kind` says which `repr(C)`, fixed-size struct follows. The agent
//! rejects records of another version instead of misreading them, so bump the version whenever a
//! layout here changes.
//!
//! [`KernelOffsets`] travels the other way: user space fills it from the running kernel's BTF and
//! the tracepoint format files, and hands it to the programs as a read-only global before load.
#![no_std]

pub mod net;
pub mod offsets;
pub mod records;
pub mod tamper;

pub use net::*;
pub use offsets::{KernelOffsets, OFFSETS_MAGIC};
pub use records::*;
pub use tamper::*;
