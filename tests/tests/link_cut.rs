//! The link between a real sensor and its controller cut for minutes while the host raises
//! alerts: when the link is mended, every alert reaches the controller, in the order it was
//! raised, each once, and so does the graph history of what ran meanwhile.
//!
//! The controller runs in a network namespace of its own and the sensor reaches it over a
//! veth pair; the cut takes the namespace's end down, so the sensor's packets vanish without
//! an error, as on a pulled cable or a dead router.
//!
//! Time is compressed where the code allows: the uplink's state stops changing 15 s into a
//! cut (the QUIC idle timeout of 10 s has ended the session, and reconnection waits have
//! reached their 5 s bound), and from then on a cut of ten minutes only repeats what one of
//! a minute does. The test cuts for `VIGIL_LINK_CUT_SECS` (default 60); run it with 600 for
//! the full ten minutes.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{
    Sensor,
    fleet::{Controller, enrolled, host_group},
    kernel_tests_enabled,
    net::{Cgroup, Peer},
    setuid_copy,
};

/// How long the link stays cut, unless `VIGIL_LINK_CUT_SECS` says otherwise.
const DEFAULT_CUT: Duration = Duration::from_secs(60);
/// One alert raised this often while the link is cut.
const RAISE_EVERY: Duration = Duration::from_secs(2);
/// How long the mended link may take to carry everything up: a connection attempt started
/// during the cut ends at the 10 s idle timeout, then waits at most 5 s before the next.
const CATCH_UP: Duration = Duration::from_secs(60);

fn cut_for() -> Duration {
    match std::env::var("VIGIL_LINK_CUT_SECS") {
        Err(_) => DEFAULT_CUT,
        Ok(s) => Duration::from_secs(
            s.parse()
                .unwrap_or_else(|e| panic!("VIGIL_LINK_CUT_SECS={s:?} is not seconds: {e}")),
        ),
    }
}

fn wait<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The ids of the sensor's own alerts, in the order it raised them.
fn raised(sensor: &Sensor) -> Vec<String> {
    sensor
        .alerts()
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect()
}

fn online(c: &Controller, host: &str) -> bool {
    c.hosts()
        .iter()
        .any(|h| h["id"] == host && h["connected"] == true)
}

fn uplink(sensor: &Sensor) -> Value {
    let status = sensor.status().expect("the sensor's status");
    status["uplink"].clone()
}

#[test]
fn alerts_raised_while_the_link_is_cut_arrive_in_order_and_once_when_it_is_mended() {
    let test = "link cut";
    if !kernel_tests_enabled(test) {
        return;
    }
    let cut = cut_for();
    let net = Peer::with(&[], &[]);
    let c = Controller::start_behind(&net).expect("a controller behind the veth pair");
    let parent = Cgroup::create();
    let cg = host_group(&parent, "cut-host");
    let (sensor, host) = enrolled(&c, &cg, None);
    let dir = tempfile::tempdir().expect("tempdir");

    cg.run(&setuid_copy(dir.path(), "before-cut"));
    let before = wait("the first alert at the controller", CATCH_UP, || {
        let ids = c.alert_ids();
        (!ids.is_empty()).then_some(ids)
    });
    let sessions = uplink(&sensor)["sessions"]
        .as_u64()
        .expect("the uplink's session count");

    net.cut();
    let started = Instant::now();
    let (mut raised_during, mut offline_seen, mut down_seen) = (0usize, false, false);
    while started.elapsed() < cut {
        cg.run(&setuid_copy(
            dir.path(),
            &format!("during-cut-{raised_during}"),
        ));
        raised_during += 1;
        offline_seen |= !online(&c, &host);
        down_seen |= uplink(&sensor)["connected"] == false;
        // The cut is real: nothing the sensor raised since gets through.
        assert_eq!(
            c.alert_ids(),
            before,
            "an alert crossed the cut link after {:?}",
            started.elapsed()
        );
        std::thread::sleep(RAISE_EVERY);
    }
    assert!(
        offline_seen,
        "the controller never showed the host offline during a {cut:?} cut:\n{}",
        c.log()
    );
    assert!(
        down_seen,
        "the sensor never said its link was down during a {cut:?} cut:\n{}",
        sensor.log()
    );
    let local = raised(&sensor);
    assert!(
        local.len() > raised_during,
        "the sensor raised an alert for each of the {raised_during} setuid runs: {local:?}"
    );

    net.mend();
    let mended = Instant::now();
    let remote = wait("every alert at the controller", CATCH_UP, || {
        let ids = c.alert_ids();
        (ids.len() >= local.len()).then_some(ids)
    });
    eprintln!(
        "{} alerts raised during a {cut:?} cut reached the controller {:?} after the link was mended",
        local.len() - before.len(),
        mended.elapsed()
    );
    assert_eq!(
        remote,
        raised(&sensor),
        "the controller holds the sensor's alerts, in the order they were raised"
    );
    let distinct: BTreeSet<&String> = remote.iter().collect();
    assert_eq!(distinct.len(), remote.len(), "an alert was stored twice");
    assert!(online(&c, &host), "the host is online again:\n{}", c.log());
    let now = uplink(&sensor);
    assert!(
        now["sessions"].as_u64().unwrap_or(0) > sessions,
        "the sensor connected again: {now}"
    );
    assert_eq!(
        now["graph_deltas_dropped"], 0,
        "the graph spool held what the cut kept back: {now}"
    );

    // What ran during the cut is in the fleet's history, each exec once.
    for name in [
        "during-cut-0".to_owned(),
        format!("during-cut-{}", raised_during - 1),
    ] {
        let q = format!("execs where path endswith \"/{name}\"");
        let hits = wait(
            &format!("the exec of {name} in the history"),
            CATCH_UP,
            || {
                let h = c.hunt(&q);
                (!h.is_empty()).then_some(h)
            },
        );
        assert_eq!(hits.len(), 1, "{name} ran once: {hits:?}");
        assert_eq!(hits[0]["host"], host.as_str());
    }
}
