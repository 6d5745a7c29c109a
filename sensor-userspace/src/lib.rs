//! `vigil-sensor`: the Vigil host sensor.
//!
//! The modules are the stages data flows through, in order, and each imports only the stages
//! before it:
//!
//! - [`kernel`]: loads the eBPF programs (probing what this kernel allows) and reads their
//!   ring buffer;
//! - [`ingest`]: decodes the kernel's records, interprets syscalls into typed events, keeps
//!   the scope, and publishes events to a sink;
//! - [`model`]: what the sensor knows of the host: the events, the process table, the graph;
//! - [`detect`]: the rules (Sigma and behaviour) and the detector that runs them on events;
//! - [`triage`]: risk and decision, incidents and their stories, alerts, indicators;
//! - [`act`]: the responder: plans, executors, the journal and every undo;
//! - [`uplink`]: enrollment and the connection to the controller.
//!
//! [`control`] is the daemon's command interface (its requests and replies, and the local
//! socket that serves them); the uplink carries the same commands from the controller.
//! [`metrics`] serves the same status to Prometheus.
//! [`run`] wires the stages into the daemon; the CLI is `main.rs`. [`policy`] is the
//! operator's strategy, read by every stage from detection on; [`pattern`] is the string
//! matcher the rules and the policy's exceptions share; [`host`] holds the helpers over the
//! host itself (procfs, cgroups, hashing, the state directory, clocks, durable writes). These
//! three import no stage.
//!
//! The `kernel` feature (default) holds aya, the kernel programs and everything that needs
//! them; without it the crate is the rules, policy, events and graph library the controller
//! checks pushes with.

#[cfg(feature = "kernel")]
pub mod kernel;

pub mod ingest;

pub mod model;

pub mod detect;

pub mod triage;

#[cfg(feature = "kernel")]
pub mod act;

#[cfg(feature = "kernel")]
pub mod uplink;

#[cfg(feature = "kernel")]
pub mod control;
#[cfg(feature = "kernel")]
pub mod metrics;
#[cfg(feature = "kernel")]
pub mod run;

pub mod host;
pub mod pattern;
pub mod policy;
