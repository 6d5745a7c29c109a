//! Sigma conditions over a fixed set of selection names.
#![no_main]

use sensor_userspace::detect::rules::sigma::condition;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let names = ["selection".to_owned(), "filter".to_owned(), "sel_2".to_owned()];
    let _ = condition::parse(text, &names);
});
