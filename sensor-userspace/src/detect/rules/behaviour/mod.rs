//! Vigil's own behaviour rules: one event in its graph context, a sequence of events in one
//! process or tree within a window, or a threshold of distinct values in a window. The format
//! is documented in `deploy/rules/README.md`.
//!
//! [`rule`] parses and compiles a file, [`fields`] names what rules can read, [`engine`]
//! evaluates them on live events, [`case`] reads a rule's own test events and [`testcase`] replays them.

pub mod case;
pub mod engine;
pub mod fields;
pub mod rule;
pub mod testcase;

pub use rule::BehaviourRule;
