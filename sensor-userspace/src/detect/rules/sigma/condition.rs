//! Sigma conditions: `and`, `or`, `not`, parentheses, and `1 of X*`, `all of X*`, `1 of them`,
//! `all of them`. Names are resolved against the rule's selections when the rule loads, so an
//! unknown name is a load error, not a silent false. Nesting is bounded ([`MAX_DEPTH`]), so
//! no condition can exhaust the stack of whoever loads it.

/// The deepest nesting of parentheses and `not` a condition may have; SigmaHQ's deepest is
/// under ten.
pub const MAX_DEPTH: usize = 64;

/// What is wrong with a condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Valid Sigma this engine does not run: the rule is skipped as unsupported.
    #[error("aggregations ('|' at column {0}) are not supported")]
    Aggregation(usize),
    #[error("unexpected character {ch:?} at column {column}")]
    Character { ch: char, column: usize },
    #[error("condition names {0:?}, which matches no selection")]
    NoSelection(String),
    #[error("unbalanced parenthesis in the condition")]
    Unbalanced,
    #[error("'{0} of' must be followed by a name pattern or 'them'")]
    QuantifierTarget(String),
    #[error("{0:?} must be used as '1 of {0}' or 'all of {0}'")]
    BareWildcard(String),
    #[error("unexpected ')' in the condition")]
    UnexpectedClose,
    #[error("the condition ends too early")]
    EndsEarly,
    #[error("unexpected text after the condition: {0}")]
    Trailing(String),
    #[error("the condition is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

impl ConditionError {
    /// Whether the condition is valid Sigma that this engine does not run (as opposed to
    /// a broken condition).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Aggregation(_))
    }
}

/// A compiled condition over selections (by index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Sel(usize),
    AnyOf(Vec<usize>),
    AllOf(Vec<usize>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    pub fn eval(&self, sel: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Expr::Sel(i) => sel(*i),
            Expr::AnyOf(ix) => ix.iter().any(|&i| sel(i)),
            Expr::AllOf(ix) => ix.iter().all(|&i| sel(i)),
            Expr::Not(e) => !e.eval(sel),
            Expr::And(es) => es.iter().all(|e| e.eval(sel)),
            Expr::Or(es) => es.iter().any(|e| e.eval(sel)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<Tok>, ConditionError> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if !word.is_empty() {
            out.push(Tok::Word(std::mem::take(word)));
        }
    };
    for (i, c) in text.char_indices() {
        match c {
            '(' => {
                flush(&mut word, &mut out);
                out.push(Tok::Open);
            }
            ')' => {
                flush(&mut word, &mut out);
                out.push(Tok::Close);
            }
            '|' => {
                return Err(ConditionError::Aggregation(i + 1));
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c if c.is_alphanumeric() || c == '_' || c == '*' || c == '-' || c == '.' => {
                word.push(c)
            }
            ch => return Err(ConditionError::Character { ch, column: i + 1 }),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    names: &'a [String],
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek_word().is_some_and(|w| w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut terms = vec![self.and()?];
        while self.keyword("or") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut terms = vec![self.not()?];
        while self.keyword("and") {
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn not(&mut self) -> Result<Expr, ConditionError> {
        if self.keyword("not") {
            let inner = self.nested(Self::not)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    /// Runs `f` one level deeper, refusing past [`MAX_DEPTH`].
    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Expr, ConditionError>,
    ) -> Result<Expr, ConditionError> {
        if self.depth >= MAX_DEPTH {
            return Err(ConditionError::TooDeep);
        }
        self.depth += 1;
        let e = f(self);
        self.depth -= 1;
        e
    }

    fn resolve(&self, pattern: &str) -> Result<Vec<usize>, ConditionError> {
        let matcher = crate::pattern::Pattern::compile(pattern, crate::pattern::Mode::Exact)
            .map_err(|_| ConditionError::NoSelection(pattern.to_owned()))?;
        let ix: Vec<usize> = self
            .names
            .iter()
            .enumerate()
            .filter(|(_, n)| pattern == "them" || matcher.matches(n))
            .map(|(i, _)| i)
            .collect();
        if ix.is_empty() {
            return Err(ConditionError::NoSelection(pattern.to_owned()));
        }
        Ok(ix)
    }

    fn primary(&mut self) -> Result<Expr, ConditionError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Open) => {
                self.pos += 1;
                let e = self.nested(Self::or)?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err(ConditionError::Unbalanced);
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Word(w)) => {
                self.pos += 1;
                let quantifier = match w.to_ascii_lowercase().as_str() {
                    "1" | "any" => Some(true),
                    "all" => Some(false),
                    _ => None,
                };
                if let Some(any) = quantifier
                    && self.keyword("of")
                {
                    let Some(target) = self.peek_word().map(str::to_owned) else {
                        return Err(ConditionError::QuantifierTarget(w));
                    };
                    self.pos += 1;
                    let ix = self.resolve(&target)?;
                    return Ok(if any {
                        Expr::AnyOf(ix)
                    } else {
                        Expr::AllOf(ix)
                    });
                }
                let ix = self.resolve(&w)?;
                match ix.as_slice() {
                    [i] if !w.contains('*') => Ok(Expr::Sel(*i)),
                    _ => Err(ConditionError::BareWildcard(w)),
                }
            }
            Some(Tok::Close) => Err(ConditionError::UnexpectedClose),
            None => Err(ConditionError::EndsEarly),
        }
    }
}

/// Parses `text` against the rule's selection `names`.
pub fn parse(text: &str, names: &[String]) -> Result<Expr, ConditionError> {
    let mut p = Parser {
        toks: tokens(text)?,
        pos: 0,
        depth: 0,
        names,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(ConditionError::Trailing(format!("{:?}", &p.toks[p.pos..])));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        [
            "selection",
            "selection_a",
            "selection_b",
            "filter_main_x",
            "filter_optional_y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn eval(cond: &str, truth: &[bool]) -> bool {
        let e = parse(cond, &names()).expect("parses");
        e.eval(&|i| truth[i])
    }

    #[test]
    fn precedence_quantifiers_and_parentheses() {
        let t = [true, true, false, false, true];
        assert!(eval("selection and not 1 of filter_main_*", &t));
        assert!(!eval("selection and not 1 of filter_*", &t));
        assert!(eval("1 of selection_*", &t));
        assert!(!eval("all of selection_*", &t));
        assert!(eval("all of selection*", &[true, true, true, false, false]));
        assert!(
            eval("selection_b or selection and selection_a", &t),
            "and binds tighter than or"
        );
        assert!(!eval("(selection_b or selection) and selection_b", &t));
        assert!(eval("1 of them", &t));
        assert!(!eval("all of them", &t));
        assert!(eval("not not selection", &t));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |c: &str| parse(c, &names()).expect_err(c);
        assert_eq!(
            err("selection | count() > 5"),
            ConditionError::Aggregation(11)
        );
        assert!(err("selection | count() > 5").is_unsupported());
        assert_eq!(err("nope"), ConditionError::NoSelection("nope".into()));
        assert_eq!(err("(selection"), ConditionError::Unbalanced);
        assert_eq!(err("selection and"), ConditionError::EndsEarly);
        assert_eq!(
            err("selection_*"),
            ConditionError::BareWildcard("selection_*".into())
        );
        assert!(err("selection_*").to_string().contains("1 of"));
    }

    #[test]
    fn a_condition_nested_past_the_bound_is_refused_without_exhausting_the_stack() {
        let deep = |n: usize| format!("{}selection{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&deep(MAX_DEPTH), &names()).is_ok());
        assert_eq!(parse(&deep(20_000), &names()), Err(ConditionError::TooDeep));
        let nots = format!("{}selection", "not ".repeat(20_000));
        assert_eq!(parse(&nots, &names()), Err(ConditionError::TooDeep));
    }
}
