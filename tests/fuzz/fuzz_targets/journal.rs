//! JSON-lines journals and records as the sensor reads them back and the controller stores
//! them: the action journal, the alert log, saved incidents.
#![no_main]

use sensor_userspace::{
    act::journal::Record,
    host::jsonl::next_line,
    triage::{alerts::Alert, incidents::Incident},
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = std::io::Cursor::new(data);
    let mut line = Vec::new();
    while let Ok(Some(_)) = next_line(&mut r, &mut line) {
        let _ = serde_json::from_slice::<Record>(&line);
        let _ = serde_json::from_slice::<Alert>(&line);
    }
    let _ = serde_json::from_slice::<Vec<Incident>>(data);
});
