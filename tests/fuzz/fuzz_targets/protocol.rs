//! The QUIC protocol: frame length prefixes and bodies, both ways, and the controller's
//! session state machine fed the frames a hostile sensor could send, in any order.
#![no_main]

use std::collections::BTreeMap;

use sensor_common::protocol::{Downlink, ServerSession, Uplink, check_len, decode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = decode::<Downlink>(data);
    let mut session = ServerSession::new("h-fuzz".to_owned());
    let mut rest = data;
    while rest.len() >= 4 {
        let prefix = [rest[0], rest[1], rest[2], rest[3]];
        let Ok(len) = check_len(prefix) else { return };
        let body = &rest[4..];
        let Some(body) = body.get(..len.min(body.len())) else { return };
        if let Ok(frame) = decode::<Uplink>(body) {
            let _ = session.on_frame(frame, || (BTreeMap::new(), 0));
        }
        rest = &rest[4 + body.len()..];
    }
});
