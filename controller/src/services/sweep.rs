//! Hash sweeps: is a file with this SHA-256 on any host? The graph holds paths, not hashes,
//! so each host's sensor hashes the files it knows (executed, written, created, renamed into
//! place, and the live processes' executables), plus those the controller's history says the
//! host wrote or ran, off its own loop, and answers. Hosts answer as
//! they can; one offline when the sweep starts answers when it reconnects (for a week), and
//! `sweep --results ID` shows who has answered so far.

use sensor_common::protocol::{Command, CommandReply, is_sha256};
use serde::{Deserialize, Serialize};

use crate::{
    lock, now_ns,
    services::Fleet,
    store::{Answer, Store, StoreError, Sweep},
};

/// How long a sweep is still sent to hosts that reconnect.
const RECONNECT_WINDOW_NS: u64 = 7 * 24 * 3600 * 1_000_000_000;

/// A sweep and its answers so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub sweep: Sweep,
    /// Enrolled hosts not revoked.
    pub hosts: usize,
    pub answers: Vec<Answer>,
    /// Hosts that have not answered yet (offline ones answer when they reconnect).
    pub waiting: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0:?} is not a SHA-256 (64 lower-case hex digits)")]
    NotAHash(String),
    #[error("no sweep {0}")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// At most this much path text goes with a sweep to one host (a frame holds 4 MiB).
const MAX_PATH_BYTES: usize = 2 << 20;

/// The files the store's history says `host` wrote, created, renamed into place, made
/// executable or ran, most recent first, up to [`MAX_PATH_BYTES`].
fn known_files(store: &dyn Store, host: &str) -> Result<Vec<String>, StoreError> {
    use sensor_common::wire::{EdgeKind, NodeId};
    let mut paths = Vec::new();
    store.scan_edges(
        &[
            EdgeKind::Executed,
            EdgeKind::Wrote,
            EdgeKind::Created,
            EdgeKind::RenamedTo,
            EdgeKind::Chmodded,
        ],
        &crate::store::EdgeFilter {
            host: Some(host.to_owned()),
            ..Default::default()
        },
        &mut |h, e| {
            if h == host
                && let NodeId::File(p) = e.to
            {
                paths.push(p);
            }
        },
    )?;
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    Ok(paths
        .into_iter()
        .rev()
        .filter(|p| seen.insert(p.clone()))
        .take_while(|p| {
            bytes += p.len();
            bytes <= MAX_PATH_BYTES
        })
        .collect())
}

/// Asks one host and keeps its answer.
async fn ask(fleet: &Fleet, sweep: &Sweep, host: &str) -> Option<Answer> {
    let (store, h) = (fleet.store.clone(), host.to_owned());
    let paths = tokio::task::spawn_blocking(move || {
        crate::services::reader(&store).and_then(|r| known_files(r.as_ref(), &h))
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    let cmd = Command::Sweep {
        sha256: sweep.sha256.clone(),
        size: sweep.size,
        paths,
    };
    let answer = match fleet.link.command(host, &cmd).await {
        Ok(CommandReply::Swept { found, hashed }) => Answer {
            host: host.to_owned(),
            answered_ns: now_ns(),
            found,
            hashed,
            error: None,
        },
        Ok(other) => Answer {
            host: host.to_owned(),
            answered_ns: now_ns(),
            found: Vec::new(),
            hashed: 0,
            error: Some(format!("{other:?}")),
        },
        // Not reached: it is asked again when it reconnects.
        Err(e) => {
            tracing::info!(%host, error = %e, "sweep not delivered; asked again on reconnect");
            return None;
        }
    };
    if let Err(e) = lock(&fleet.store).put_sweep_answer(&sweep.id, &answer) {
        tracing::error!(error = %e, "cannot keep a sweep answer");
    }
    Some(answer)
}

/// Starts a sweep, asks every connected host at once, and tells `progress` (answered, of
/// hosts asked) as they answer.
pub async fn start(
    fleet: &Fleet,
    sha256: &str,
    size: Option<u64>,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Report, SweepError> {
    let started = std::time::Instant::now();
    let sha256 = sha256.to_ascii_lowercase();
    if !is_sha256(&sha256) {
        return Err(SweepError::NotAHash(sha256));
    }
    let now = now_ns();
    let sweep = Sweep {
        id: format!("sweep-{now:x}"),
        sha256,
        created_ns: now,
        size,
    };
    lock(&fleet.store).add_sweep(&sweep)?;
    let asked = fleet.link.connected();
    let mut set = tokio::task::JoinSet::new();
    for host in &asked {
        let (fleet, sweep, host) = (fleet.clone(), sweep.clone(), host.clone());
        set.spawn(async move { ask(&fleet, &sweep, &host).await });
    }
    let mut answered = 0;
    progress(answered, asked.len());
    while set.join_next().await.is_some() {
        answered += 1;
        progress(answered, asked.len());
    }
    crate::metrics::live()
        .sweep_seconds
        .observe(started.elapsed().as_secs_f64());
    results(fleet, &sweep.id)
}

/// A sweep's answers so far.
pub fn results(fleet: &Fleet, id: &str) -> Result<Report, SweepError> {
    let store = lock(&fleet.store);
    let sweep = store
        .sweeps()?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| SweepError::Unknown(id.to_owned()))?;
    let answers = store.sweep_answers(id)?;
    let hosts: Vec<String> = store
        .hosts()?
        .into_iter()
        .filter(|h| !h.revoked)
        .map(|h| h.id)
        .collect();
    let waiting = hosts
        .iter()
        .filter(|h| !answers.iter().any(|a| &a.host == *h))
        .cloned()
        .collect();
    Ok(Report {
        sweep,
        hosts: hosts.len(),
        answers,
        waiting,
    })
}

/// Asks `host` (it just connected) the recent sweeps it has not answered.
pub async fn catch_up(fleet: &Fleet, host: &str) {
    let pending: Vec<Sweep> = crate::store::blocking(|| {
        let store = lock(&fleet.store);
        let Ok(sweeps) = store.sweeps() else {
            return Vec::new();
        };
        let now = now_ns();
        sweeps
            .into_iter()
            .filter(|s| now.saturating_sub(s.created_ns) < RECONNECT_WINDOW_NS)
            .filter(|s| {
                store
                    .sweep_answers(&s.id)
                    .is_ok_and(|a| !a.iter().any(|a| a.host == host))
            })
            .collect()
    });
    for s in pending {
        ask(fleet, &s, host).await;
    }
}
