//! The kernel record decoder: any bytes the ring buffer could hold decode or are refused.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sensor_common::decode::decode(data);
});
