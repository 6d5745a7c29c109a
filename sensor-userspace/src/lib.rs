//! `vigil-sensor`: the Vigil host sensor.
//!
//! Data flows one way: [`kernel`] loads the programs and reads their ring buffer, the
//! [`pipeline`] decodes records and applies them to the [`process_table`] and the [`graph`], and publishes
//! [`events`] to a sink ([`output`]). [`run`] wires it together with the [`control`] socket.

pub mod alerts;
pub mod cgroup;
pub mod clock;
#[cfg(feature = "kernel")]
pub mod control;
pub mod detect;
pub mod durable;
pub mod events;
pub mod graph;
pub mod hash;
pub mod incidents;
pub mod indicators;
pub mod interpret;
#[cfg(feature = "kernel")]
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod policy;
pub mod process_table;
pub mod procfs;
#[cfg(feature = "kernel")]
pub mod response;
pub mod rules;
#[cfg(feature = "kernel")]
pub mod run;
pub mod state;
pub mod triage;
#[cfg(feature = "kernel")]
pub mod uplink;
