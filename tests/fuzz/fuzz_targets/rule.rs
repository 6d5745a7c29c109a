//! Rule files of either kind (Sigma and behaviour), and a behaviour rule's own test cases
//! run against it.
#![no_main]

use std::path::Path;

use sensor_userspace::detect::rules::{self, Rule, behaviour::testcase};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(Rule::Behaviour(rule)) = rules::parse(text, Path::new("fuzz.yml")) {
        let _ = testcase::run(&rule);
    }
});
