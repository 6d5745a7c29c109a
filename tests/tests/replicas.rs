//! Several controller replicas on one PostgreSQL database (a real server from Debian's
//! packages), with a real sensor that knows them all: it enrolls through one with a token
//! another issued, moves to the other when the first is killed with SIGKILL, and nothing it
//! sent is lost or stored twice.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::{
    Sensor,
    fleet::{Controller, host_group},
    kernel_tests_enabled,
    net::Cgroup,
    postgres::{self, Postgres},
};

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a controller reaches a host.
#[derive(Debug, PartialEq)]
enum Link {
    Offline,
    /// Its own connection to the host.
    Here,
    /// Through the other replica, which holds the host's connection.
    ThroughReplica,
}

fn link(c: &Controller, host: &str) -> Link {
    let hosts = c.hosts();
    let Some(h) = hosts.iter().find(|h| h["id"] == host) else {
        return Link::Offline;
    };
    match (h["connected"].as_bool(), h["through_replica"].as_bool()) {
        (Some(true), Some(true)) => Link::ThroughReplica,
        (Some(true), Some(false)) => Link::Here,
        _ => Link::Offline,
    }
}

#[test]
fn a_sensor_moves_between_replicas_on_one_database_and_loses_nothing() {
    let test = "replicas on one database";
    if !kernel_tests_enabled(test) || !postgres::enabled(test) {
        return;
    }
    let pg = Postgres::start().expect("PostgreSQL");
    let url = pg.database("fleet").expect("a database");
    let mut a = Controller::start_with(&["--store", &url]).expect("replica A");
    let b = Controller::start_with(&["--store", &url]).expect("replica B");
    assert_eq!(
        a.ca_pem(),
        b.ca_pem(),
        "both replicas sign with the one CA the database keeps"
    );

    // A token B issued, redeemed through A: the sensor tries A first.
    let token = b.token(600);
    let parent = Cgroup::create();
    let cg = host_group(&parent, "replica-host");
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let sensor = Sensor::start_containing(&[
        "--cgroup",
        cg.arg(),
        "--scope-cgroup",
        cg.arg(),
        "--controller",
        &a_addr,
        "--controller",
        &b_addr,
        "--enroll",
        &token,
    ])
    .expect("sensor");
    let hosts = a.wait_hosts("the sensor online at A", |h| {
        h.len() == 1 && h[0]["connected"] == true
    });
    let host = hosts[0]["id"].as_str().expect("host id").to_owned();
    assert_eq!(b.hosts().len(), 1, "B lists the host A enrolled: one store");
    wait("B to list the host online through A", || {
        (link(&b, &host) == Link::ThroughReplica).then_some(())
    });
    assert_eq!(link(&a, &host), Link::Here, "A holds the connection");

    // An alert and an exec while A holds the link; B reads both from the shared store.
    let dir = tempfile::tempdir().expect("tempdir");
    let before = vigil_tests::setuid_copy(dir.path(), "before-kill");
    cg.run(&before);
    wait("the first alert, read through B", || {
        (!b.alert_ids().is_empty()).then_some(())
    });

    // A dies without a goodbye; alerts raised meanwhile wait on the sensor's disk.
    a.kill();
    for n in 0..3 {
        let p = vigil_tests::setuid_copy(dir.path(), &format!("after-kill-{n}"));
        cg.run(&p);
    }
    wait("the sensor at B", || {
        (link(&b, &host) == Link::Here).then_some(())
    });
    let mine = |s: &Sensor| -> Vec<String> {
        s.alerts()
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect()
    };
    let remote = wait("every alert at B", || {
        let (r, local) = (b.alert_ids(), mine(&sensor));
        (local.len() >= 4 && r.len() >= local.len()).then_some(r)
    });
    let local = mine(&sensor);
    assert!(
        remote.len() <= local.len() && remote[..] == local[..remote.len()],
        "the same alerts, in order, each once:\nB {remote:?}\nsensor {local:?}"
    );

    // The graph history A merged and what B merged after are one history, each edge once.
    for name in ["before-kill", "after-kill-2"] {
        let q = format!("execs where path endswith \"/{name}\"");
        let hits = wait(&format!("the exec of {name} in the history"), || {
            let h = b.hunt(&q);
            (!h.is_empty()).then_some(h)
        });
        assert_eq!(hits.len(), 1, "{name} ran once: {hits:?}");
        assert_eq!(hits[0]["host"], host.as_str());
    }

    // A comes back on the same database and sees everything B took in.
    a.start_again().expect("A again");
    assert_eq!(a.alert_ids(), b.alert_ids(), "A reads what B stored");
    wait("A to list the host online through B", || {
        (link(&a, &host) == Link::ThroughReplica).then_some(())
    });

    // A command given to A reaches the host through B, which holds its link; its record
    // comes back to A.
    let out = a.ctl(&["contain", &host, "--reason", "routed through replica B"]);
    assert!(
        out.status.success(),
        "contain through A: {}\nA: {}\nB: {}",
        String::from_utf8_lossy(&out.stderr),
        a.log(),
        b.log()
    );
    let record: Value =
        serde_json::from_slice(out.stdout.split(|c| *c == b'\n').next().unwrap_or_default())
            .expect("the action record");
    assert_eq!(record["action"], "isolate", "{record}");
    assert_eq!(record["status"], "done", "{record}");
    assert!(
        a.log()
            .contains("command routed to the replica holding the host"),
        "the command went by way of the store:\n{}",
        a.log()
    );
    // And one given to B, which holds the link, runs there.
    let out = b.ctl(&["release", &host, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = sensor.actions();
    assert!(
        journal.iter().any(|r| r["action"] == "isolate"
            && r["reason"].to_string().contains("routed through replica B")),
        "the host journaled the routed containment: {journal:?}"
    );

    // Revoked through A, the host is cut off by B, which holds its link, and stays out.
    let out = a.ctl(&["revoke", &host]);
    assert!(
        out.status.success(),
        "revoke through A: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait("B to cut the revoked host off", || {
        (link(&b, &host) == Link::Offline).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(link(&b, &host), Link::Offline, "the revoked host stays out");
    assert_eq!(link(&a, &host), Link::Offline);
    drop(sensor);
}
