//! Sigma conditions: `and`, `or`, `not`, parentheses, and `1 of X*`, `all of X*`, `1 of them`,
//! `all of them`. Names are resolved against the rule's selections when the rule loads, so an
//! unknown name is a load error, not a silent false.

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

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
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
                return Err(format!(
                    "aggregations ('|' at column {}) are not supported",
                    i + 1
                ));
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c if c.is_alphanumeric() || c == '_' || c == '*' || c == '-' || c == '.' => {
                word.push(c)
            }
            c => return Err(format!("unexpected character {c:?} at column {}", i + 1)),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    names: &'a [String],
}

/// Whether selection `name` matches `pattern`, where `*` stands for any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((pre, post)) => {
            name.starts_with(pre)
                && (pre.len()..=name.len())
                    .any(|k| name.get(k..).is_some_and(|rest| wildcard(post, rest)))
        }
    }
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

    fn or(&mut self) -> Result<Expr, String> {
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

    fn and(&mut self) -> Result<Expr, String> {
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

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn resolve(&self, pattern: &str) -> Result<Vec<usize>, String> {
        let ix: Vec<usize> = self
            .names
            .iter()
            .enumerate()
            .filter(|(_, n)| pattern == "them" || wildcard(pattern, n))
            .map(|(i, _)| i)
            .collect();
        if ix.is_empty() {
            return Err(format!(
                "condition names {pattern:?}, which matches no selection"
            ));
        }
        Ok(ix)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Open) => {
                self.pos += 1;
                let e = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err("unbalanced parenthesis in the condition".into());
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
                        return Err(format!(
                            "'{w} of' must be followed by a name pattern or 'them'"
                        ));
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
                    _ => Err(format!("{w:?} must be used as '1 of {w}' or 'all of {w}'")),
                }
            }
            Some(Tok::Close) => Err("unexpected ')' in the condition".into()),
            None => Err("the condition ends too early".into()),
        }
    }
}

/// Parses `text` against the rule's selection `names`.
pub fn parse(text: &str, names: &[String]) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokens(text)?,
        pos: 0,
        names,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!(
            "unexpected text after the condition: {:?}",
            &p.toks[p.pos..]
        ));
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
        assert!(
            parse("selection | count() > 5", &names())
                .unwrap_err()
                .contains("aggregations")
        );
        assert!(
            parse("nope", &names())
                .unwrap_err()
                .contains("matches no selection")
        );
        assert!(
            parse("(selection", &names())
                .unwrap_err()
                .contains("parenthesis")
        );
        assert!(
            parse("selection and", &names())
                .unwrap_err()
                .contains("ends too early")
        );
        assert!(parse("selection_*", &names()).unwrap_err().contains("1 of"));
    }
}
