//! Every case-insensitive literal of every loaded rule, per field, in one Aho-Corasick
//! automaton: an event's field value is scanned once, and each literal pattern then reads
//! whether it occurs, at the start, at the end, or as the whole value, instead of running its
//! own string search. With a hundred rules testing `TargetFilename`, that is one pass over a
//! path instead of a hundred.

use aho_corasick::AhoCorasick;

use super::SigmaRule;

pub use crate::pattern::{CONTAINS, EXACT, PREFIX, SUFFIX};

#[derive(Debug, Default)]
pub struct LiteralIndex {
    /// Per field of `fields::FIELDS`: the automaton of its literals, if any.
    fields: Vec<Option<AhoCorasick>>,
}

impl LiteralIndex {
    /// Indexes the literals of `rules` (each pattern learns its place in its field's
    /// automaton). Empty literals stay unindexed and match the plain way.
    pub fn build<'a>(rules: impl IntoIterator<Item = &'a mut SigmaRule>) -> Self {
        let mut texts: Vec<Vec<String>> = vec![Vec::new(); super::fields::FIELDS.len()];
        let mut all = Vec::new();
        for rule in rules {
            for (field, text, slot) in rule.literals_mut() {
                let Some(list) = texts.get_mut(field) else {
                    continue;
                };
                if text.is_empty() {
                    continue;
                }
                let at = list.iter().position(|t| t == text).unwrap_or_else(|| {
                    list.push(text.to_owned());
                    list.len() - 1
                });
                *slot = u32::try_from(at).ok();
            }
            all.push(rule);
        }
        for rule in all {
            rule.settle_required();
        }
        let fields = texts
            .into_iter()
            .map(|list| {
                if list.is_empty() {
                    return None;
                }
                match AhoCorasick::new(&list) {
                    Ok(ac) => Some(ac),
                    Err(e) => {
                        // Unreachable for plain strings; the patterns keep working unindexed.
                        tracing::warn!(error = %e, "cannot index a field's literals");
                        None
                    }
                }
            })
            .collect();
        Self { fields }
    }

    /// Where each literal of `field` occurs in `lower` (the lower-cased value), by pattern:
    /// a set of [`CONTAINS`], [`PREFIX`], [`SUFFIX`] and [`EXACT`]. None for a field without
    /// literals.
    pub fn hits(&self, field: usize, lower: &str) -> Option<Vec<u8>> {
        let ac = self.fields.get(field)?.as_ref()?;
        let mut flags = vec![0u8; ac.patterns_len()];
        let len = lower.len();
        for m in ac.find_overlapping_iter(lower) {
            let mut f = CONTAINS;
            if m.start() == 0 {
                f |= PREFIX;
            }
            if m.end() == len {
                f |= SUFFIX;
                if m.start() == 0 {
                    f |= EXACT;
                }
            }
            if let Some(slot) = flags.get_mut(m.pattern().as_usize()) {
                *slot |= f;
            }
        }
        Some(flags)
    }
}
