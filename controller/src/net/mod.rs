//! The controller's network edge: the QUIC server the sensors reach ([`server`]) and the
//! operator socket ([`ops`]). Both call down into the services; nothing below calls up.

pub mod ops;
pub mod server;
