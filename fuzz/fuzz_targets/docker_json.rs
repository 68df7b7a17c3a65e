//! What the Docker daemon answers: any inspect body and any `/events` line is parsed into
//! container metadata or ignored, never a panic, whatever its types, nesting or encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::enrich::runtime::docker;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = docker::parse_inspect(&v);
    }
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = docker::event_meta(line);
    }
});
