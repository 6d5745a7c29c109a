//! Field values as matchers: Sigma's modifiers and wildcards.
//!
//! Plain, `contains`, `startswith` and `endswith` values match case-insensitively, with `*`
//! (any run) and `?` (one character) wildcards and `\` escapes; `re` is a case-sensitive
//! regular expression; `cidr` an IPv4 or IPv6 network. They are Sigma's, and the behaviour
//! rules and the policy's exceptions use them too.

// How a literal was found in a value: a set of these flags (a literal index's hits).

/// The literal occurs somewhere in the value.
pub const CONTAINS: u8 = 1;
/// It occurs at the start.
pub const PREFIX: u8 = 2;
/// It occurs at the end.
pub const SUFFIX: u8 = 4;
/// It is the whole value.
pub const EXACT: u8 = 8;

use std::net::IpAddr;

/// One wildcard pattern token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    One,
}

/// A compiled value.
#[derive(Clone, Debug)]
pub struct Pattern(Compiled);

#[derive(Clone, Debug)]
enum Compiled {
    /// Case-insensitive match of a value without inner wildcards: plain string operations.
    Literal {
        how: Literal,
        text: String,
        /// Its pattern in the field's literal index (Sigma's `LiteralIndex` automaton), once indexed.
        indexed: Option<u32>,
    },
    /// Case-insensitive wildcard match over the whole field.
    Glob(Vec<Tok>),
    Regex(regex::Regex),
    Cidr {
        net: IpAddr,
        prefix: u8,
    },
}

/// Where a literal must sit in the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Literal {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// A field's value, with the lower-case form the case-insensitive patterns compare against,
/// computed once per event however many patterns read it (and its characters, only if a
/// pattern with inner wildcards needs them).
#[derive(Clone, Debug)]
pub struct FieldValue {
    pub raw: std::borrow::Cow<'static, str>,
    /// None when `raw` is lower case already (most paths): no copy.
    lower: Option<String>,
    chars: std::cell::OnceCell<Vec<char>>,
}

fn lowercase(s: &str) -> Option<String> {
    if s.is_ascii() {
        s.bytes()
            .any(|b| b.is_ascii_uppercase())
            .then(|| s.to_ascii_lowercase())
    } else {
        let l: String = s.chars().flat_map(char::to_lowercase).collect();
        (l != s).then_some(l)
    }
}

impl FieldValue {
    pub fn new(raw: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        let raw = raw.into();
        Self {
            lower: lowercase(&raw),
            raw,
            chars: std::cell::OnceCell::new(),
        }
    }

    pub(crate) fn lower(&self) -> &str {
        self.lower.as_deref().unwrap_or(&self.raw)
    }

    fn chars(&self) -> &[char] {
        self.chars.get_or_init(|| self.lower().chars().collect())
    }
}

/// A literal pattern when `toks` has wildcards only at its ends.
fn literal(toks: &[Tok]) -> Option<Compiled> {
    let lead = toks.first() == Some(&Tok::Any);
    let trail = toks.len() > usize::from(lead) && toks.last() == Some(&Tok::Any);
    let middle = &toks[usize::from(lead)..toks.len() - usize::from(trail)];
    let text: String = middle
        .iter()
        .map(|t| match t {
            Tok::Lit(c) => Some(*c),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let how = match (lead, trail) {
        (false, false) => Literal::Exact,
        (false, true) => Literal::Prefix,
        (true, false) => Literal::Suffix,
        (true, true) => Literal::Contains,
    };
    Some(Compiled::Literal {
        how,
        text,
        indexed: None,
    })
}

/// How a value is to be matched, from a field's modifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Exact,
    Contains,
    StartsWith,
    EndsWith,
    Regex,
    Cidr,
}

/// What is wrong with a value that was to be a pattern.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("invalid regular expression {value:?}: {source}")]
    Regex {
        value: String,
        source: Box<regex::Error>,
    },
    #[error("invalid CIDR address {0:?}")]
    CidrAddress(String),
    #[error("invalid CIDR prefix {0:?}")]
    CidrPrefix(String),
    #[error("CIDR prefix of {value:?} is longer than {max}")]
    CidrTooLong { value: String, max: u8 },
}

impl Pattern {
    /// Compiles `value` for `mode`; an error names what is wrong with it.
    pub fn compile(value: &str, mode: Mode) -> Result<Self, PatternError> {
        match mode {
            Mode::Regex => regex::Regex::new(value)
                .map(|re| Pattern(Compiled::Regex(re)))
                .map_err(|e| PatternError::Regex {
                    value: value.to_owned(),
                    source: Box::new(e),
                }),
            Mode::Cidr => {
                let (addr, prefix) = value.split_once('/').unwrap_or((value, ""));
                let net: IpAddr = addr
                    .parse()
                    .map_err(|_| PatternError::CidrAddress(value.to_owned()))?;
                let max = if net.is_ipv4() { 32 } else { 128 };
                let prefix: u8 = if prefix.is_empty() {
                    max
                } else {
                    prefix
                        .parse()
                        .map_err(|_| PatternError::CidrPrefix(value.to_owned()))?
                };
                if prefix > max {
                    return Err(PatternError::CidrTooLong {
                        value: value.to_owned(),
                        max,
                    });
                }
                Ok(Pattern(Compiled::Cidr { net, prefix }))
            }
            _ => {
                let mut toks = Vec::new();
                if matches!(mode, Mode::Contains | Mode::EndsWith) {
                    toks.push(Tok::Any);
                }
                let mut chars = value.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(n @ ('*' | '?' | '\\')) => toks.push(Tok::Lit(n)),
                            Some(n) => {
                                toks.push(Tok::Lit('\\'));
                                toks.extend(n.to_lowercase().map(Tok::Lit));
                            }
                            None => toks.push(Tok::Lit('\\')),
                        },
                        '*' => toks.push(Tok::Any),
                        '?' => toks.push(Tok::One),
                        c => toks.extend(c.to_lowercase().map(Tok::Lit)),
                    }
                }
                if matches!(mode, Mode::Contains | Mode::StartsWith) {
                    toks.push(Tok::Any);
                }
                Ok(Pattern(literal(&toks).unwrap_or(Compiled::Glob(toks))))
            }
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        self.matches_value(&FieldValue::new(value.to_owned()))
    }

    /// Its pattern in the field's literal index, when indexed.
    pub(crate) fn indexed(&self) -> Option<u32> {
        match &self.0 {
            Compiled::Literal { indexed, .. } => *indexed,
            _ => None,
        }
    }

    /// The text of a case-insensitive literal, and where its index entry goes.
    pub(crate) fn literal_mut(&mut self) -> Option<(&str, &mut Option<u32>)> {
        match &mut self.0 {
            Compiled::Literal { text, indexed, .. } => Some((text.as_str(), indexed)),
            _ => None,
        }
    }

    /// Matches with the field's literal hits (from the literal index's `hits`) when
    /// this pattern is indexed: one lookup instead of a string search.
    pub fn matches_with(&self, value: &FieldValue, hits: Option<&[u8]>) -> bool {
        if let (
            Compiled::Literal {
                how,
                indexed: Some(i),
                ..
            },
            Some(hits),
        ) = (&self.0, hits)
        {
            let flag = match how {
                Literal::Exact => EXACT,
                Literal::Prefix => PREFIX,
                Literal::Suffix => SUFFIX,
                Literal::Contains => CONTAINS,
            };
            return hits.get(*i as usize).is_some_and(|h| h & flag != 0);
        }
        self.matches_value(value)
    }

    /// Matches a field value prepared once for every pattern that reads it.
    pub fn matches_value(&self, value: &FieldValue) -> bool {
        match &self.0 {
            Compiled::Regex(re) => re.is_match(&value.raw),
            Compiled::Cidr { net, prefix } => value
                .raw
                .parse::<IpAddr>()
                .is_ok_and(|ip| in_network(ip, *net, *prefix)),
            Compiled::Literal { how, text, .. } => {
                let v = value.lower();
                match how {
                    Literal::Exact => v == text,
                    Literal::Prefix => v.starts_with(text.as_str()),
                    Literal::Suffix => v.ends_with(text.as_str()),
                    Literal::Contains => v.contains(text.as_str()),
                }
            }
            Compiled::Glob(toks) => glob(toks, value.chars()),
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (a, b, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(b)) << 96,
            prefix,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), prefix),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(bits));
    a & mask == b & mask
}

/// Iterative wildcard match with backtracking to the last `*` (linear in practice).
fn glob(p: &[Tok], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(Tok::Any) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(Tok::One) => {
                pi += 1;
                si += 1;
            }
            Some(Tok::Lit(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| *t == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(value: &str, mode: Mode, field: &str) -> bool {
        Pattern::compile(value, mode)
            .expect("compiles")
            .matches(field)
    }

    #[test]
    fn modifiers_and_wildcards() {
        assert!(m("/base64", Mode::EndsWith, "/usr/bin/BASE64"));
        assert!(!m("/base64", Mode::EndsWith, "/usr/bin/base64x"));
        assert!(m("-d", Mode::Contains, "base64 -d x"));
        assert!(m("/tmp/", Mode::StartsWith, "/tmp/x"));
        assert!(m("*/nc", Mode::Exact, "/usr/bin/nc"));
        assert!(m("ba?h", Mode::Exact, "bash"));
        assert!(!m("ba?h", Mode::Exact, "baash"));
        assert!(m("a\\*b", Mode::Exact, "a*b"));
        assert!(!m("a\\*b", Mode::Exact, "axb"));
        assert!(m("", Mode::Exact, ""));
        assert!(m("", Mode::Contains, "anything"));
        assert!(m("*", Mode::Exact, ""));
        assert!(m("**", Mode::Exact, "x"));
        assert!(m("/TMP/", Mode::StartsWith, "/tmp/x"));
        assert!(!m("x", Mode::Exact, "xx"));
        assert!(m("ÉTÉ", Mode::Contains, "un été chaud"));
    }

    #[test]
    fn regex_is_case_sensitive_and_cidr_matches_networks() {
        assert!(m("^/bin/(ba)?sh$", Mode::Regex, "/bin/bash"));
        assert!(!m("^/BIN/", Mode::Regex, "/bin/bash"));
        assert!(m("10.0.0.0/8", Mode::Cidr, "10.200.1.1"));
        assert!(!m("10.0.0.0/8", Mode::Cidr, "11.0.0.1"));
        assert!(m("fe80::/10", Mode::Cidr, "fe80::1"));
        assert!(Pattern::compile("10.0.0.0/33", Mode::Cidr).is_err());
        assert!(Pattern::compile("(", Mode::Regex).is_err());
    }
}
