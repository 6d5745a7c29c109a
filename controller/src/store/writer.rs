//! Group commit for graph deltas: one writer takes the deltas of every connection and
//! commits what has queued up together, so a thousand sensors cost a few fsyncs a second
//! rather than a thousand. A delta's stream waits for its commit before its sensor is
//! acknowledged: nothing acknowledged is ever lost.
//!
//! There is no fixed delay: the writer commits at once what is waiting (up to
//! [`MAX_GROUP_EDGES`]), and whatever arrives during that commit forms the next group. One
//! quiet sensor waits for one commit; a busy fleet fills each group.

use sensor_common::wire::Delta;
use tokio::sync::{mpsc, oneshot};

use super::{SharedStore, StoreError};

/// Edges one commit takes at most.
pub const MAX_GROUP_EDGES: usize = 50_000;
/// Deltas waiting for the writer at most; a stream sending more waits its turn.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store's writer has stopped")]
    Stopped,
}

struct Pending {
    host: String,
    seq: u64,
    delta: Delta,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle the connections merge through (cheap to clone).
#[derive(Clone)]
pub struct GraphWriter {
    queue: mpsc::Sender<Pending>,
}

impl GraphWriter {
    /// Starts the writer on the current tokio runtime, on a connection of its own where the
    /// store offers one ([`super::Store::writer`]).
    pub fn start(store: SharedStore) -> Self {
        let own = crate::lock(&store).writer();
        let store = match own {
            Ok(Some(w)) => std::sync::Arc::new(std::sync::Mutex::new(w)),
            Ok(None) => store,
            Err(e) => {
                tracing::warn!(error = %e, "no connection of its own for the graph writer; sharing the store's");
                store
            }
        };
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Self { queue }
    }

    /// Merges `delta` of `host`; returns once it is durable.
    pub async fn merge(&self, host: &str, seq: u64, delta: Delta) -> Result<(), MergeError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Pending {
                host: host.to_owned(),
                seq,
                delta,
                done,
            })
            .await
            .map_err(|_| MergeError::Stopped)?;
        committed.await.map_err(|_| MergeError::Stopped)??;
        Ok(())
    }
}

async fn run(store: SharedStore, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut edges = first.delta.edges.len();
        let mut group = vec![first];
        while edges < MAX_GROUP_EDGES {
            let Ok(next) = rx.try_recv() else { break };
            edges += next.delta.edges.len();
            group.push(next);
        }
        let store = store.clone();
        if tokio::task::spawn_blocking(move || commit(&store, group))
            .await
            .is_err()
        {
            // The commit panicked: its streams saw their answers dropped and end unacked.
            tracing::error!("the graph writer's commit panicked");
        }
    }
}

/// Commits `group` as one transaction; if that fails, each delta alone, so that one delta
/// the store refuses fails its own stream only.
fn commit(store: &SharedStore, group: Vec<Pending>) {
    let started = std::time::Instant::now();
    let mut s = crate::lock(store);
    let all: Vec<(&str, u64, &Delta)> = group
        .iter()
        .map(|p| (p.host.as_str(), p.seq, &p.delta))
        .collect();
    let together = s.apply_deltas(&all);
    drop(all);
    match together {
        Ok(()) => {
            let m = crate::metrics::live();
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.deltas.inc_by(group.len() as u64);
            m.edges
                .inc_by(group.iter().map(|p| p.delta.edges.len() as u64).sum());
            for p in group {
                let _ = p.done.send(Ok(()));
            }
        }
        Err(e) if group.len() == 1 => {
            if let Some(p) = group.into_iter().next() {
                let _ = p.done.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, deltas = group.len(), "a group commit failed; committing its deltas one by one");
            for p in group {
                let alone = s.apply_deltas(&[(p.host.as_str(), p.seq, &p.delta)]);
                let _ = p.done.send(alone);
            }
        }
    }
}
