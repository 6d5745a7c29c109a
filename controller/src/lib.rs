//! The Vigil controller: one server for the whole fleet, reached over QUIC with mutual TLS.
//!
//! Imports run one way, from the network down to what is kept:
//!
//! - [`net`]: the QUIC server over the sans-IO protocol of `sensor_common::protocol`, and
//!   the operator socket the other commands use, with its audit log;
//! - [`services`]: hunts, incidents, desired state and its push, standing hunts, sweeps,
//!   recovery, and the reconciliation a host's connection sets going; each works on the store
//!   and a narrow link to the connected hosts, never on the server;
//! - [`store`]: what the controller keeps ([`store::model`]), behind one narrow interface
//!   (SQLite embedded);
//! - [`ca`] and [`token`]: the controller's own certificate authority, and the one-time
//!   enrollment tokens that pin it;
//! - [`metrics`]: what every layer counts for Prometheus, rendered by `net`.
//!
//! Builds without aya or a Linux kernel: it imports the wire side of `sensor-common` and the
//! sensor's rule and policy parsers (`sensor-userspace` without its `kernel` feature).

/// Wall-clock time now, in nanoseconds since the Unix epoch: the sensor's own clock, so the
/// two sides stamp alike.
pub use sensor_userspace::host::clock::unix_now_ns as now_ns;

/// Locks a mutex shared by the server's tasks; a task that panicked holding it left nothing
/// half-written that the store's transactions did not roll back.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How the sensors' journals name an operator of the controller (`who` is the socket peer).
pub(crate) fn operator(who: &str) -> String {
    format!("controller operator ({who})")
}

pub mod ca;
pub mod metrics;
pub mod net;
pub mod services;
pub mod store;
pub mod token;
