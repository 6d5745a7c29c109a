//! The sensor's policy and the controller's fleet policy (TOML).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = sensor_userspace::policy::Policy::parse(text, "fuzz");
    let _ = controller::services::fleet_policy::FleetPolicy::parse(text);
});
