//! The controller's network edge: the QUIC server the sensors reach ([`server`]), the
//! operator socket ([`ops`]), and the console's HTTPS server and API ([`api`]), which makes
//! the socket's requests for authenticated operators, and Prometheus' `/metrics` ([`metrics`]). All call down into the services;
//! nothing below calls up.

pub mod api;
pub mod metrics;
pub mod ops;
pub mod server;
