//! A Sigma engine for product `linux`, categories `process_creation`, `file_event` and
//! `network_connection`.
//!
//! A rule file is parsed ([`rule`]), its selections compiled into field matchers
//! ([`crate::pattern`]) and its condition into an expression ([`condition`]); [`fields`] names the
//! Sigma fields the sensor can fill; [`index`] turns every literal of a field, across
//! all rules, into one automaton run once per event. A rule that uses anything this engine cannot evaluate is
//! refused with the reason, never half-loaded.

pub mod condition;
pub mod fields;
pub mod index;
pub mod rule;

pub use rule::{RuleError, SigmaRule};
