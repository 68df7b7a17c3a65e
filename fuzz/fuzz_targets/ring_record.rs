//! Ring buffer records as the kernel side writes them: any bytes decode to a record or an
//! error, never a panic or an out-of-bounds read; the string helpers the enricher applies to
//! the records' buffers take any bytes and any length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::timestamp(data);
    let _ = decode::decode(data);
    let len = data.first().map_or(0, |&b| b as usize * 4);
    let _ = decode::c_str(data, len);
    let _ = decode::split_args(data);
});
