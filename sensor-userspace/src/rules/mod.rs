//! Detection rules. [`sigma`]: SigmaHQ's YAML rules for Linux, compiled into matchers over the
//! sensor's events.

pub mod sigma;
