//! The segment language: its syntax tree, its JSON form and its parser.
//!
//! # Design
//!
//! Marketers type conditions the way they say them:
//!
//! ```text
//! gender = "female" and birthday between 35 years ago and 18 years ago
//!   and city in ("Paris", "Boulogne-Billancourt") and hobbies contains "surf"
//! did "Order Completed" at least 2 times within 90 days where category = "vinyl"
//! last_order within 30 days and not segment "Lapsed customers"
//! ```
//!
//! The text is parsed into a small tree ([`Query`]) which is also the JSON form (serde's
//! externally tagged enums: `{"and": [...]}`, `{"cond": {...}}`), so a query built by a program
//! and one typed by a person are the same thing. Relative dates (`18 years ago`, `within 30
//! days`) stay relative in the tree and are resolved against the clock when the query runs, so a
//! saved segment keeps meaning "18 to 35 years old" as time passes. Errors carry the line and
//! column of the offending token and a hint saying what was expected there.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A segment query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// Every part holds.
    And(Vec<Query>),
    /// At least one part holds.
    Or(Vec<Query>),
    /// The part does not hold.
    Not(Box<Query>),
    /// Members of another saved segment, by name.
    Segment(String),
    /// A condition on a trait or a computed trait.
    Cond(Cond),
    /// A condition on the events a person did.
    Did(Did),
}

/// A condition on one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cond {
    /// Trait or computed trait name.
    pub field: String,
    /// What must hold of its value.
    #[serde(flatten)]
    pub test: Test,
}

/// What must hold of a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// A comparison.
    Cmp {
        /// Operator.
        op: Op,
        /// Right-hand side.
        value: Operand,
    },
    /// Inclusive range, in either order.
    Between {
        /// One bound.
        from: Operand,
        /// The other bound.
        to: Operand,
    },
    /// Equal to one of these.
    In {
        /// Values.
        values: Vec<Literal>,
    },
    /// A list holding the value, or a text holding it (case-insensitive).
    Contains {
        /// The value.
        value: Literal,
    },
    /// A date or time within the last span.
    Within {
        /// The span.
        span: Span,
    },
    /// The field has a value.
    Exists,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Equal.
    #[serde(rename = "=")]
    Eq,
    /// Not equal (a missing value is not "not equal": it is unknown).
    #[serde(rename = "!=")]
    Ne,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "<=")]
    Le,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    Ge,
}

/// A literal value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A text, or a date `YYYY-MM-DD`, or an instant.
    Text(String),
}

/// The right-hand side of a comparison: a literal or a time relative to now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operand {
    /// `N units ago`.
    Ago(Span),
    /// The current time (`now`, `today`).
    Now,
    /// A literal.
    #[serde(untagged)]
    Value(Literal),
}

/// A span of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// How many.
    pub n: u32,
    /// Of what.
    pub unit: Unit,
}

/// Units of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Hours.
    Hours,
    /// Days.
    Days,
    /// Weeks.
    Weeks,
    /// Calendar months.
    Months,
    /// Calendar years.
    Years,
}

/// A condition on events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Did {
    /// Event name.
    pub event: String,
    /// How many times (at least once when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Count>,
    /// Only events in the last span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Span>,
    /// Conditions every counted event's properties meet.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<Cond>,
}

/// A number of times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    /// At least n.
    AtLeast(u32),
    /// At most n (zero included: `did "X" at most 0 times` is "never did X").
    AtMost(u32),
    /// Exactly n.
    Exactly(u32),
}

impl Count {
    /// Whether `n` events satisfy the count.
    pub fn holds(self, n: u32) -> bool {
        match self {
            Count::AtLeast(k) => n >= k,
            Count::AtMost(k) => n <= k,
            Count::Exactly(k) => n == k,
        }
    }
}

impl Query {
    /// The names of the fields, events and segments the query reads, for purpose checks.
    pub fn visit(&self, f: &mut impl FnMut(Ref<'_>)) {
        match self {
            Query::And(parts) | Query::Or(parts) => parts.iter().for_each(|p| p.visit(f)),
            Query::Not(q) => q.visit(f),
            Query::Segment(name) => f(Ref::Segment(name)),
            Query::Cond(c) => f(Ref::Field(&c.field)),
            Query::Did(d) => {
                f(Ref::Event(&d.event));
                for c in &d.filter {
                    f(Ref::Property(&d.event, &c.field));
                }
            }
        }
    }
}

/// Something a query reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref<'a> {
    /// A trait or computed trait.
    Field(&'a str),
    /// An event.
    Event(&'a str),
    /// A property of an event.
    Property(&'a str, &'a str),
    /// Another segment.
    Segment(&'a str),
}

/// A parse error, with where it happened and what would have been right.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}, column {column}: {message} ({hint})")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What was expected.
    pub hint: String,
}

/// Parses the text form of a query.
pub fn parse(text: &str) -> Result<Query, ParseError> {
    let tokens = lex(text)?;
    let mut p = Parser { text, tokens, at: 0 };
    if p.peek().is_none() {
        return Err(p.error_at(
            text.len(),
            "the query is empty",
            "write a condition, e.g. city = \"Paris\"",
        ));
    }
    let q = p.or()?;
    match p.peek() {
        None => Ok(q),
        Some(t) => Err(p.error_at(
            t.at,
            &format!("unexpected {}", t.kind),
            "join conditions with `and` or `or`",
        )),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Str(_) => f.write_str("a quoted text"),
            Tok::Num(n) => write!(f, "the number {n}"),
            Tok::Sym(s) => write!(f, "`{s}`"),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    kind: Tok,
    at: usize,
}

fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let err = |at: usize, message: &str, hint: &str| {
        let (line, column) = position(text, at);
        ParseError {
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        }
    };
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some((_, d)) = chars.next() {
                if d == c {
                    closed = true;
                    break;
                }
                if d == '\\' {
                    match chars.next() {
                        Some((_, e)) => s.push(e),
                        None => break,
                    }
                } else {
                    s.push(d);
                }
            }
            if !closed {
                return Err(err(at, "this text is not closed", &format!("end it with {c}")));
            }
            out.push(Token { kind: Tok::Str(s), at });
        } else if c.is_ascii_digit() || (c == '-' && text[at + 1..].starts_with(|d: char| d.is_ascii_digit())) {
            let mut end = at + c.len_utf8();
            chars.next();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_ascii_digit() || d == '.' {
                    end = i + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            let n = text[at..end]
                .parse::<f64>()
                .map_err(|_| err(at, "this is not a number", "write e.g. 18 or 49.90"))?;
            out.push(Token { kind: Tok::Num(n), at });
        } else if c.is_alphabetic() || c == '_' {
            let mut end = at;
            while let Some(&(i, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' || d == '.' {
                    end = i + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token {
                kind: Tok::Word(text[at..end].to_owned()),
                at,
            });
        } else {
            chars.next();
            let two = text[at..].get(..2);
            let sym = match (c, two) {
                (_, Some("!=")) => "!=",
                (_, Some("<=")) => "<=",
                (_, Some(">=")) => ">=",
                (_, Some("<>")) => "!=",
                (_, Some("==")) => "=",
                ('=', _) => "=",
                ('<', _) => "<",
                ('>', _) => ">",
                ('(', _) => "(",
                (')', _) => ")",
                (',', _) => ",",
                ('[', _) => "(",
                (']', _) => ")",
                _ => {
                    return Err(err(
                        at,
                        &format!("unexpected character `{c}`"),
                        "quote texts with \"…\"; operators are = != < <= > >=",
                    ));
                }
            };
            if matches!(two, Some("!=" | "<=" | ">=" | "<>" | "==")) {
                chars.next();
            }
            out.push(Token {
                kind: Tok::Sym(sym),
                at,
            });
        }
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    at: usize,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "did", "segment", "between", "in", "contains", "within", "exists", "where", "ago", "now",
    "today", "at", "least", "most", "exactly", "times", "time", "true", "false",
];

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn error_at(&self, at: usize, message: &str, hint: &str) -> ParseError {
        let (line, column) = position(self.text, at);
        ParseError {
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// An error at the current token (or at the end of the text).
    fn error(&self, expected: &str, hint: &str) -> ParseError {
        match self.peek() {
            Some(t) => self.error_at(t.at, &format!("expected {expected}, found {}", t.kind), hint),
            None => self.error_at(self.text.len(), &format!("expected {expected} at the end"), hint),
        }
    }

    fn word(&self) -> Option<String> {
        match self.peek() {
            Some(Token { kind: Tok::Word(w), .. }) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.word().as_deref() == Some(w) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Token { kind: Tok::Sym(x), .. }) if *x == s) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, w: &str, hint: &str) -> Result<(), ParseError> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.error(&format!("`{w}`"), hint))
        }
    }

    fn or(&mut self) -> Result<Query, ParseError> {
        let mut parts = vec![self.and()?];
        while self.eat_word("or") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Query, ParseError> {
        let mut parts = vec![self.unary()?];
        while self.eat_word("and") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Query, ParseError> {
        if self.eat_word("not") {
            return Ok(Query::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("(") {
            let q = self.or()?;
            if !self.eat_sym(")") {
                return Err(self.error("`)`", "close the parenthesis opened before"));
            }
            return Ok(q);
        }
        if self.eat_word("segment") {
            return match self.peek().cloned() {
                Some(Token {
                    kind: Tok::Str(name), ..
                }) => {
                    self.at += 1;
                    Ok(Query::Segment(name))
                }
                _ => Err(self.error("a segment name", "quote it: segment \"Lapsed customers\"")),
            };
        }
        if self.eat_word("did") {
            return self.did().map(Query::Did);
        }
        self.cond().map(Query::Cond)
    }

    fn field(&mut self) -> Result<String, ParseError> {
        match self.peek().cloned() {
            Some(Token { kind: Tok::Word(w), .. }) if !KEYWORDS.contains(&w.to_ascii_lowercase().as_str()) => {
                self.at += 1;
                Ok(w)
            }
            _ => Err(self.error(
                "a trait name",
                "start a condition with a trait (city = \"Paris\"), `did \"Event\"`, `segment \"Name\"` or `not`",
            )),
        }
    }

    fn cond(&mut self) -> Result<Cond, ParseError> {
        let field = self.field()?;
        let test = self.test()?;
        Ok(Cond { field, test })
    }

    fn test(&mut self) -> Result<Test, ParseError> {
        const HINT: &str = "after a trait comes = != < <= > >=, between, in, contains, within or exists";
        if self.eat_word("between") {
            let from = self.operand()?;
            self.expect_word("and", "write: between 35 years ago and 18 years ago")?;
            let to = self.operand()?;
            return Ok(Test::Between { from, to });
        }
        if self.eat_word("in") {
            if !self.eat_sym("(") {
                return Err(self.error("`(`", "list the values: in (\"Paris\", \"Lyon\")"));
            }
            let mut values = vec![self.literal()?];
            while self.eat_sym(",") {
                values.push(self.literal()?);
            }
            if !self.eat_sym(")") {
                return Err(self.error("`,` or `)`", "separate values with commas and close the list"));
            }
            return Ok(Test::In { values });
        }
        if self.eat_word("contains") {
            return Ok(Test::Contains { value: self.literal()? });
        }
        if self.eat_word("within") {
            return Ok(Test::Within { span: self.span()? });
        }
        if self.eat_word("exists") {
            return Ok(Test::Exists);
        }
        let op = match self.peek() {
            Some(Token { kind: Tok::Sym(s), .. }) => match *s {
                "=" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                _ => return Err(self.error("an operator", HINT)),
            },
            _ => return Err(self.error("an operator", HINT)),
        };
        self.at += 1;
        Ok(Test::Cmp {
            op,
            value: self.operand()?,
        })
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        let lit = match self.peek().cloned() {
            Some(Token { kind: Tok::Str(s), .. }) => Literal::Text(s),
            Some(Token { kind: Tok::Num(n), .. }) => Literal::Number(n),
            Some(Token { kind: Tok::Word(w), .. }) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Token { kind: Tok::Word(w), .. }) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => {
                return Err(self.error(
                    "a value",
                    "quote texts and dates (\"Paris\", \"2024-05-01\"); numbers and true/false are bare",
                ));
            }
        };
        self.at += 1;
        Ok(lit)
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        if self.eat_word("now") || self.eat_word("today") {
            return Ok(Operand::Now);
        }
        if let Some(Token { kind: Tok::Num(_), .. }) = self.peek()
            && let Some(Token { kind: Tok::Word(w), .. }) = self.tokens.get(self.at + 1)
            && unit(w).is_some()
        {
            let span = self.span()?;
            self.expect_word("ago", "a relative date reads `18 years ago`")?;
            return Ok(Operand::Ago(span));
        }
        self.literal().map(Operand::Value)
    }

    fn span(&mut self) -> Result<Span, ParseError> {
        let n = match self.peek() {
            Some(Token { kind: Tok::Num(n), .. }) if *n >= 0.0 && n.fract() == 0.0 && *n <= u32::MAX as f64 => {
                *n as u32
            }
            _ => return Err(self.error("a whole number", "write e.g. 30 days, 2 weeks, 18 years")),
        };
        self.at += 1;
        let Some(unit) = self.word().as_deref().and_then(unit) else {
            return Err(self.error("a unit", "hours, days, weeks, months or years"));
        };
        self.at += 1;
        Ok(Span { n, unit })
    }

    fn did(&mut self) -> Result<Did, ParseError> {
        let event = match self.peek().cloned() {
            Some(Token {
                kind: Tok::Str(name), ..
            }) => {
                self.at += 1;
                name
            }
            _ => return Err(self.error("an event name", "quote it: did \"Order Completed\"")),
        };
        let mut did = Did {
            event,
            count: None,
            within: None,
            filter: Vec::new(),
        };
        loop {
            if self.eat_word("at") {
                let at_least = if self.eat_word("least") {
                    true
                } else if self.eat_word("most") {
                    false
                } else {
                    return Err(self.error("`least` or `most`", "write: at least 2 times"));
                };
                let n = self.times()?;
                did.count = Some(if at_least { Count::AtLeast(n) } else { Count::AtMost(n) });
            } else if self.eat_word("exactly") {
                did.count = Some(Count::Exactly(self.times()?));
            } else if self.eat_word("within") {
                did.within = Some(self.span()?);
            } else if self.eat_word("where") {
                if self.eat_sym("(") {
                    did.filter.push(self.cond()?);
                    while self.eat_word("and") {
                        did.filter.push(self.cond()?);
                    }
                    if !self.eat_sym(")") {
                        return Err(
                            self.error("`and` or `)`", "property conditions in parentheses are joined by `and`")
                        );
                    }
                } else {
                    did.filter.push(self.cond()?);
                }
            } else {
                return Ok(did);
            }
        }
    }

    fn times(&mut self) -> Result<u32, ParseError> {
        let n = match self.peek() {
            Some(Token { kind: Tok::Num(n), .. }) if *n >= 0.0 && n.fract() == 0.0 && *n <= u32::MAX as f64 => {
                *n as u32
            }
            _ => return Err(self.error("a whole number", "write: at least 2 times")),
        };
        self.at += 1;
        if !(self.eat_word("times") || self.eat_word("time")) {
            return Err(self.error("`times`", "write: at least 2 times"));
        }
        Ok(n)
    }
}

fn unit(word: &str) -> Option<Unit> {
    Some(match word.to_ascii_lowercase().as_str() {
        "hour" | "hours" => Unit::Hours,
        "day" | "days" => Unit::Days,
        "week" | "weeks" => Unit::Weeks,
        "month" | "months" => Unit::Months,
        "year" | "years" => Unit::Years,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Operand {
        Operand::Value(Literal::Text(s.into()))
    }

    #[test]
    fn parses_the_founding_target() {
        let q = parse(
            "gender = \"female\" and birthday between 35 years ago and 18 years ago\n\
             and city = \"Paris\" and hobbies contains \"surf\"",
        )
        .unwrap();
        let Query::And(parts) = q else { panic!("{q:?}") };
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[0],
            Query::Cond(Cond {
                field: "gender".into(),
                test: Test::Cmp {
                    op: Op::Eq,
                    value: text("female")
                }
            })
        );
        assert_eq!(
            parts[1],
            Query::Cond(Cond {
                field: "birthday".into(),
                test: Test::Between {
                    from: Operand::Ago(Span {
                        n: 35,
                        unit: Unit::Years
                    }),
                    to: Operand::Ago(Span {
                        n: 18,
                        unit: Unit::Years
                    }),
                }
            })
        );
    }

    #[test]
    fn parses_event_conditions_and_precedence() {
        let q = parse(
            "did \"Order Completed\" at least 2 times within 90 days where category = \"vinyl\" or not segment \"VIP\" and x exists",
        )
        .unwrap();
        let Query::Or(parts) = q else { panic!("{q:?}") };
        assert_eq!(
            parts[0],
            Query::Did(Did {
                event: "Order Completed".into(),
                count: Some(Count::AtLeast(2)),
                within: Some(Span {
                    n: 90,
                    unit: Unit::Days
                }),
                filter: vec![Cond {
                    field: "category".into(),
                    test: Test::Cmp {
                        op: Op::Eq,
                        value: text("vinyl")
                    }
                }],
            })
        );
        assert!(matches!(&parts[1], Query::And(a) if matches!(&a[0], Query::Not(_))));
    }

    #[test]
    fn json_form_round_trips() {
        let q = parse(
            "(city in (\"Paris\", \"Lyon\") or orders >= 3) and last_order within 30 days and not did \"Refund\" where (amount > 10 and reason = 'late') and favorite_style exists and did \"X\" at most 0 times",
        )
        .unwrap();
        let json = serde_json::to_value(&q).unwrap();
        let back: Query = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, q);
        let cmp: Query =
            serde_json::from_str(r#"{"cond": {"field": "orders", "cmp": {"op": ">=", "value": 2}}}"#).unwrap();
        assert_eq!(cmp, parse("orders >= 2").unwrap());
        let ago: Query = serde_json::from_str(
            r#"{"cond": {"field": "birthday", "between": {"from": {"ago": {"n": 35, "unit": "years"}}, "to": {"ago": {"n": 18, "unit": "years"}}}}}"#,
        )
        .unwrap();
        assert_eq!(ago, parse("birthday between 35 years ago and 18 years ago").unwrap());
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = parse("city = \"Paris\"\n  and birthday between 35 years ago").unwrap_err();
        assert_eq!((e.line, e.column), (2, 36));
        assert!(e.hint.contains("between 35 years ago and 18"), "{e}");
        let e = parse("city ~ \"Paris\"").unwrap_err();
        assert_eq!((e.line, e.column), (1, 6));
        assert_eq!(parse("city == \"Paris\"").unwrap(), parse("city = \"Paris\"").unwrap());
        let e = parse("city = \"Paris").unwrap_err();
        assert!(e.message.contains("not closed"), "{e}");
        let e = parse("did Order").unwrap_err();
        assert!(e.hint.contains("did \"Order Completed\""), "{e}");
        let e = parse("city = \"Paris\" lyon").unwrap_err();
        assert!(e.hint.contains("`and` or `or`"), "{e}");
        assert!(parse("   ").is_err());
        let e = parse("and = 1").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
    }
}
