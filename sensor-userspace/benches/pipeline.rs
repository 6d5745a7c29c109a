//! Events per second through decode, the process table and the graph, on one core, with no
//! kernel: synthetic records shaped like a busy host (writes, connects, process churn).
//! Run by `cargo xtask bench pipeline`; prints one line per configuration. `ONLY=text` in the
//! environment runs only the configurations whose name holds `text` (for profiling one).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test or benchmark stops loudly at the first thing that fails"
)]

use std::time::Instant;

use sensor_common::{
    decode::testing::{bytes_of, exec_args, header, task_info},
    process::{ExitRecord, ForkRecord},
    record::EventKind,
    syscall::{Syscall, SyscallHead},
};
use sensor_userspace::{
    detect::{Detector, SensorSelf},
    host::clock::BootClock,
    ingest::interpret::NoResolver,
    ingest::output::JsonLines,
    ingest::pipeline::{Discard, Observer, Pipeline, Sink},
    model::graph::{Graph, GraphLimits},
    model::process_table::{ProcessTable, TableLimits},
    triage::detection::Detection,
};

/// A write-open of `path` by `pid`.
fn open_record(pid: u32, path: &str) -> Vec<u8> {
    let mut raw = sensor_common::decode::testing::syscall_record(
        task_info(pid, pid, 1, "app"),
        Syscall::Openat,
        3,
        Some(path),
    );
    // flags O_WRONLY|O_CREAT in args[2]
    let at = core::mem::offset_of!(SyscallHead, args) + 2 * 8;
    raw[at..at + 8].copy_from_slice(&0o101u64.to_ne_bytes());
    raw
}

fn connect_record(pid: u32, port: u16) -> Vec<u8> {
    // SAFETY: SyscallHead is plain integers and byte arrays; all-zero is valid.
    let mut h: SyscallHead = unsafe { core::mem::zeroed() };
    h.header = header(EventKind::Syscall, 0, 9);
    h.task = task_info(pid, pid, 1, "app");
    h.syscall = Syscall::Connect as u16;
    h.sock_family = 2;
    h.sock_type = 1;
    h.sock_protocol = 6;
    h.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    h.remote_addr[..4].copy_from_slice(&[10, 0, 0, (port % 200) as u8]);
    h.local_port = 40000;
    h.remote_port = port;
    bytes_of(&h)
}

/// One second of a busy host: 80% file writes, 15% connects, 5% process churn.
fn workload(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut next_pid = 10_000u32;
    let mut i = 0usize;
    while out.len() < n {
        let pid = 1000 + (i % 500) as u32;
        match i % 20 {
            0 => {
                next_pid += 1;
                let t = task_info(next_pid, next_pid, pid, "worker");
                out.push(bytes_of(&ForkRecord {
                    header: header(EventKind::Fork, 0, 1),
                    task: t,
                }));
                out.push(exec_args(t, &["/usr/bin/worker", "--job", "42"], 0));
                out.push(bytes_of(&sensor_common::decode::testing::exec_record(
                    t,
                    "/usr/bin/worker",
                )));
                out.push(bytes_of(&ExitRecord {
                    header: header(EventKind::Exit, 0, 2),
                    task: t,
                    exit_code: 0,
                    _pad: 0,
                }));
            }
            1..=3 => out.push(connect_record(pid, 443 + (i % 50) as u16)),
            _ => out.push(open_record(
                pid,
                &format!("/var/lib/app/data/{}.log", i % 2000),
            )),
        }
        i += 1;
    }
    out.truncate(n);
    out
}

fn run<S: Sink>(name: &str, sink: S, records: &[Vec<u8>], detector: Option<Detector>) {
    if std::env::var("ONLY").is_ok_and(|o| !name.contains(&o)) {
        return;
    }
    let table = ProcessTable::new(100, TableLimits::default());
    let graph = Graph::new("bench".into(), GraphLimits::default());
    let policy = sensor_userspace::policy::Policy::shipped().expect("the shipped policy");
    let book =
        sensor_userspace::triage::incidents::IncidentBook::new("bench".into(), 0, policy, None);
    let p = Pipeline::new(
        table,
        graph,
        sink,
        BootClock::fixed(0),
        Box::new(NoResolver),
    );
    match detector {
        Some(d) => measure(
            name,
            p.with_observer(Detection::new(d, book)),
            records,
            |p| p.observer_mut().map_or(0, |d| d.take_alerts().len()),
        ),
        None => measure(name, p, records, |_| 0),
    }
}

fn measure<S: Sink, O: Observer>(
    name: &str,
    mut p: Pipeline<S, O>,
    records: &[Vec<u8>],
    alerts: impl Fn(&mut Pipeline<S, O>) -> usize,
) {
    // Warm up, then measure.
    for r in records.iter().take(records.len() / 10) {
        p.ingest(r);
    }
    let t = Instant::now();
    for r in records {
        p.ingest(r);
    }
    p.flush();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "pipeline {name}: {} events in {secs:.3} s = {:.0} events/s on one core ({} decode errors, {} alerts)",
        records.len(),
        records.len() as f64 / secs,
        p.decode_errors(),
        alerts(&mut p)
    );
}

/// The public SigmaHQ Linux rules, from the directory `VIGIL_SIGMA_DIR` names, if set.
fn shared_rules() -> Option<Vec<sensor_userspace::detect::rules::SigmaRule>> {
    let dir = std::path::PathBuf::from(std::env::var_os("VIGIL_SIGMA_DIR")?);
    let report = sensor_userspace::detect::rules::load_dir(&dir).ok()?;
    (!report.sigma.is_empty()).then_some(report.sigma)
}

fn detector(
    sigma: Vec<sensor_userspace::detect::rules::SigmaRule>,
    behaviour: Vec<sensor_userspace::detect::rules::BehaviourRule>,
) -> Option<Detector> {
    Some(Detector::new(
        sigma,
        behaviour,
        SensorSelf::default(),
        Default::default(),
        "bench".into(),
        0,
    ))
}

fn main() {
    let records = workload(1_000_000);
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if only.as_deref().is_none_or(|o| o == "pipeline") {
        run("decode+table+graph", Discard, &records, None);
        match JsonLines::open(std::path::Path::new("/dev/null")) {
            Ok(sink) => run("decode+table+graph+json", sink, &records, None),
            Err(e) => eprintln!("skipped the JSON run: {e}"),
        }
    }
    if only.as_deref().is_none_or(|o| o == "rules") {
        let shipped = sensor_userspace::detect::rules::shipped().behaviour;
        let b = shipped.len();
        let one_behaviour: Vec<_> = shipped
            .iter()
            .filter(|r| r.id == "vigil-reverse-shell")
            .cloned()
            .collect();
        run(
            "+ 1 behaviour rule",
            Discard,
            &records,
            detector(Vec::new(), one_behaviour),
        );
        run(
            &format!("+ all {b} shipped behaviour rules"),
            Discard,
            &records,
            detector(Vec::new(), shipped.clone()),
        );
        let Some(rules) = shared_rules() else {
            eprintln!("SKIPPED the rules runs: no SigmaHQ rules (set VIGIL_SIGMA_DIR)");
            return;
        };
        let one: Vec<_> = rules
            .iter()
            .filter(|r| r.title == "Decode Base64 Encoded Text")
            .cloned()
            .collect();
        let n = rules.len();
        run(
            "+ 1 sigma rule",
            Discard,
            &records,
            detector(one, Vec::new()),
        );
        run(
            &format!("+ all {n} sigma rules"),
            Discard,
            &records,
            detector(rules.clone(), Vec::new()),
        );
        run(
            &format!("+ all {n} sigma and {b} behaviour rules"),
            Discard,
            &records,
            detector(rules, shipped),
        );
    }
}
