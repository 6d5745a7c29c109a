//! The Vigil controller: one server for the whole fleet, reached over QUIC with mutual TLS.
//!
//! - [`ca`]: the controller's own certificate authority (server and host certificates);
//! - [`token`]: one-time enrollment tokens that pin the CA;
//! - [`hunt`]: the query language over the fleet's graphs and their history;
//! - [`store`]: what the controller keeps, behind one narrow interface (SQLite embedded);
//! - [`server`]: the QUIC layer over the sans-IO protocol of `sensor_common::protocol`;
//! - [`ops`]: the operator socket the other commands use, with its audit log.
//!
//! Builds without aya or a Linux kernel: it imports only the wire side of `sensor-common`.

pub mod ca;
pub mod hunt;
pub mod ops;
pub mod server;
pub mod store;
pub mod token;
