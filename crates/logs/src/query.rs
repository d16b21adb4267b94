//! The log search language: a small Lucene/Kibana-like syntax parsed into an
//! [`Expr`] tree that the index turns into its own queries.
//!
//! # Grammar
//!
//! ```text
//! query   = ws* [or ws*]                        (empty or blank: every line)
//! or      = and (("OR" | "||") and)*
//! and     = unary ([("AND" | "&&")] unary)*     (adjacent terms: implicit AND)
//! unary   = ("NOT" | "!" | "-") unary | primary
//! primary = "(" or ")" | "*" | term
//! term    = '"' phrase '"' | field ":" value | word
//! value   = "(" or ")"                          (the field applies to every term inside)
//!         | '"' exact '"'
//!         | ("[" | "{") bound "TO" bound ("]" | "}")
//!         | (">" | ">=" | "<" | "<=") number
//!         | unquoted                            (runs to whitespace or ")")
//! bound   = number | "*"
//! ```
//!
//! Precedence is NOT, then AND, then OR. Operators are uppercase only: `and`
//! is a word. `AND`, `OR` and `NOT` are operators only as whole words; `!` and
//! `-` are NOT at the start of a term (`a-b` is one word; in a number field
//! group `-5` is a number). Inside quotes, `\"` is a quote and `\\` a
//! backslash; any other backslash is kept as written.
//!
//! What `field:value` means depends on the field's [`FieldKind`]:
//!
//! - text (`message:timeout`): words to find, as [`Expr::Text`]; a quoted
//!   value is a phrase, and `message:*` is [`Expr::All`];
//! - keyword (`route:/events/{id}`, `ip:10.0.0.1`): the exact value as
//!   written, as [`Expr::Keyword`]; a trailing unquoted `*` makes it a prefix
//!   (`route:*` is any value);
//! - number (`status:500`, `status:5xx`, `latency_ms:>1000`,
//!   `status:[500 TO 599]`, `status:*` for any value): [`Expr::Range`].
//!   Numbers are decimal (`-12`, `0.5`); ranges and comparisons are refused
//!   on other kinds, and a range whose lower bound is above its upper bound
//!   is refused.
//!
//! Hostile input is bounded: at most [`MAX_QUERY_BYTES`] bytes, [`MAX_DEPTH`]
//! levels of parentheses and NOT (the parser recurses only that deep), and
//! [`MAX_TERMS`] terms; parsing is linear in the input.

use std::fmt;
use std::ops::Bound;

#[cfg(test)]
mod tests;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Deepest nesting of parentheses and NOT accepted.
pub const MAX_DEPTH: usize = 32;
/// Most terms in one query.
pub const MAX_TERMS: usize = 256;

/// The kind of a searchable field; decides what `field:value` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Tokenized text (message, path): `field:value` finds words.
    Text,
    /// An exact value (route, user, ip): `field:value` compares the whole value.
    Keyword,
    /// A number (status, latency): `field:value` is a range.
    Number,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every line (the empty query, or `*`).
    All,
    /// Lines matching every child (at least two, none of them an `And`).
    And(Vec<Expr>),
    /// Lines matching any child (at least two, none of them an `Or`).
    Or(Vec<Expr>),
    /// Lines not matching the child.
    Not(Box<Expr>),
    /// Words that must all occur (free text when `field` is None: message and path),
    /// tokenized by the index as lowercase alphanumeric runs; `phrase` = they must occur in order.
    Text {
        /// The text field searched, or None for free text.
        field: Option<String>,
        /// The text as written (the index tokenizes it).
        text: String,
        /// Whether the words must occur in order (the text was quoted).
        phrase: bool,
    },
    /// The exact value of a keyword field (`route:"/events/{id}"`, `user:42`, `method:get` is NOT lowercased: keep value as written);
    /// `prefix` for a trailing unquoted `*` (`route:/api/*`).
    Keyword {
        /// The keyword field.
        field: String,
        /// The value as written, without the trailing `*` of a prefix.
        value: String,
        /// Whether `value` is a prefix rather than the whole value.
        prefix: bool,
    },
    /// A number field within bounds: `status:500` is [500, 500], `status:5xx` is [500, 599]
    /// (digit then `xx`, any case), `latency_ms:>1000` (also >=, <, <=), `status:[500 TO 599]`,
    /// `status:{500 TO 599}` exclusive, `[500 TO *]` open. Values are decimal numbers, may be fractional or negative.
    Range {
        /// The number field.
        field: String,
        /// The lower bound.
        lower: Bound<f64>,
        /// The upper bound.
        upper: Bound<f64>,
    },
}

/// A query that cannot be parsed: where and why. `position` is the 0-based CHARACTER offset
/// (not byte) of the offending character in the input (for "unexpected end", the input's length).
///
/// A query longer than [`MAX_QUERY_BYTES`] is refused at the first character
/// that does not fit in the limit (the number of whole characters that do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Character offset of the offending character.
    pub position: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.position)
    }
}

impl std::error::Error for ParseError {}

/// Parses `input`. `field_kind` says which field names exist and their kind; an unknown
/// field is an error at the field name's position, listing nothing more than the name.
pub fn parse(
    input: &str,
    field_kind: impl Fn(&str) -> Option<FieldKind>,
) -> Result<Expr, ParseError> {
    check_length(input)?;
    let mut parser = Parser {
        chars: input.chars().collect(),
        pos: 0,
        terms: 0,
        field_kind: &field_kind,
    };
    parser.query()
}

/// Refuses inputs over [`MAX_QUERY_BYTES`], before any other work.
fn check_length(input: &str) -> Result<(), ParseError> {
    if input.len() <= MAX_QUERY_BYTES {
        return Ok(());
    }
    let fitting = input
        .char_indices()
        .take_while(|(at, c)| at + c.len_utf8() <= MAX_QUERY_BYTES)
        .count();
    Err(error(
        fitting,
        format!("query is longer than {MAX_QUERY_BYTES} bytes"),
    ))
}

fn error(position: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        position,
        message: message.into(),
    }
}

/// The operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    And,
    Or,
    Not,
}

/// What starts at the parser's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    Open,
    Close,
    Op(Op),
    /// A word, a quoted phrase, `*` or `field:value`: read by [`Parser::term`].
    Term,
}

/// A token and where it is.
#[derive(Debug, Clone, Copy)]
struct Peeked {
    token: Token,
    at: usize,
    len: usize,
}

/// A field named before `:`, with its kind.
struct Field {
    name: String,
    kind: FieldKind,
}

/// A recursive-descent parser over the input's characters, so that every
/// position is a character offset.
struct Parser<'f> {
    chars: Vec<char>,
    pos: usize,
    terms: usize,
    field_kind: &'f dyn Fn(&str) -> Option<FieldKind>,
}

impl Parser<'_> {
    fn query(&mut self) -> Result<Expr, ParseError> {
        if self.peek().token == Token::End {
            return Ok(Expr::All);
        }
        let expr = self.or(0, None)?;
        let next = self.peek();
        match next.token {
            Token::End => Ok(expr),
            _ => Err(error(next.at, "unmatched `)`")),
        }
    }

    /// `and (OR and)*`. `group` is the field of an enclosing `field:( … )`.
    fn or(&mut self, depth: usize, group: Option<&Field>) -> Result<Expr, ParseError> {
        let mut items = vec![self.and(depth, group, None)?];
        loop {
            let next = self.peek();
            if next.token != Token::Op(Op::Or) {
                break;
            }
            self.pos = next.at + next.len;
            items.push(self.and(depth, group, Some(next))?);
        }
        Ok(join(items, false))
    }

    /// `unary ([AND] unary)*`; `after` is the operator before the first operand.
    fn and(
        &mut self,
        depth: usize,
        group: Option<&Field>,
        after: Option<Peeked>,
    ) -> Result<Expr, ParseError> {
        let mut items = vec![self.unary(depth, group, after)?];
        loop {
            let next = self.peek();
            match next.token {
                Token::End | Token::Close | Token::Op(Op::Or) => break,
                Token::Op(Op::And) => {
                    self.pos = next.at + next.len;
                    items.push(self.unary(depth, group, Some(next))?);
                }
                Token::Open | Token::Term | Token::Op(Op::Not) => {
                    items.push(self.unary(depth, group, None)?);
                }
            }
        }
        Ok(join(items, true))
    }

    /// `NOT unary | ( or ) | term`; `after` is the operator before it, if any.
    fn unary(
        &mut self,
        depth: usize,
        group: Option<&Field>,
        after: Option<Peeked>,
    ) -> Result<Expr, ParseError> {
        let next = self.peek();
        if self.negative_number(group, next) {
            return self.term(depth, group);
        }
        match next.token {
            Token::Op(Op::Not) => {
                let depth = deeper(depth, next.at)?;
                self.pos = next.at + next.len;
                let operand = self.unary(depth, group, Some(next))?;
                Ok(Expr::Not(Box::new(operand)))
            }
            Token::Open => self.parenthesized(depth, group, next.at),
            Token::Term => self.term(depth, group),
            Token::End | Token::Close | Token::Op(_) => Err(self.missing_operand(next, after)),
        }
    }

    /// Whether `next` is the `-` of a negative number in a number field group
    /// (`latency_ms:(-5 OR 5)`), which is a value, not NOT.
    fn negative_number(&self, group: Option<&Field>, next: Peeked) -> bool {
        group.is_some_and(|field| field.kind == FieldKind::Number)
            && self.chars.get(next.at) == Some(&'-')
            && self
                .chars
                .get(next.at + 1)
                .is_some_and(char::is_ascii_digit)
    }

    /// The error for a term expected where `next` is.
    fn missing_operand(&self, next: Peeked, after: Option<Peeked>) -> ParseError {
        if let Some(op) = after {
            return error(op.at, format!("`{}` needs a term after it", self.text(op)));
        }
        match next.token {
            Token::Op(_) => error(
                next.at,
                format!("`{}` needs a term before it", self.text(next)),
            ),
            Token::Close => error(next.at, "unmatched `)`"),
            Token::End | Token::Open | Token::Term => error(next.at, "unexpected end of query"),
        }
    }

    /// `( or )`, the `(` being at `open`.
    fn parenthesized(
        &mut self,
        depth: usize,
        group: Option<&Field>,
        open: usize,
    ) -> Result<Expr, ParseError> {
        let depth = deeper(depth, open)?;
        self.pos = open + 1;
        match self.peek().token {
            Token::Close => return Err(error(open, "empty parentheses")),
            Token::End => return Err(error(open, "unmatched `(`")),
            _ => {}
        }
        let expr = self.or(depth, group)?;
        let close = self.peek();
        if close.token != Token::Close {
            return Err(error(open, "unmatched `(`"));
        }
        self.pos = close.at + close.len;
        Ok(expr)
    }

    /// A term: `field:value`, or inside a field group a value of that field,
    /// or else free text.
    fn term(&mut self, depth: usize, group: Option<&Field>) -> Result<Expr, ParseError> {
        if let Some(field) = group {
            return self.value(field);
        }
        let start = self.pos;
        let Some(len) = self.field_name_len(start) else {
            return self.free_text();
        };
        let name: String = self.chars[start..start + len].iter().collect();
        let Some(kind) = (self.field_kind)(&name) else {
            return Err(error(start, format!("unknown field `{name}`")));
        };
        self.pos = start + len + 1;
        let field = Field { name, kind };
        if self.chars.get(self.pos) == Some(&'(') {
            return self.parenthesized(depth, Some(&field), self.pos);
        }
        self.value(&field)
    }

    /// The length of a field name at `start` followed by `:`, if there is one.
    fn field_name_len(&self, start: usize) -> Option<usize> {
        let first = *self.chars.get(start)?;
        if !(first.is_ascii_alphabetic() || first == '_') {
            return None;
        }
        let len = self.chars[start..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
            .count();
        (self.chars.get(start + len) == Some(&':')).then_some(len)
    }

    /// A free word, a quoted phrase, or `*`.
    fn free_text(&mut self) -> Result<Expr, ParseError> {
        let at = self.pos;
        if self.chars.get(at) == Some(&'"') {
            let text = self.quoted()?;
            return self.leaf(at, free(text, true));
        }
        if self.chars.get(at) == Some(&'*') && self.ends_word(at + 1) {
            self.pos = at + 1;
            return self.leaf(at, Expr::All);
        }
        let word = self.run(|c| c.is_whitespace() || matches!(c, '(' | ')' | '"'));
        self.leaf(at, free(word, false))
    }

    /// The value of `field` at the parser's position (after `field:`).
    fn value(&mut self, field: &Field) -> Result<Expr, ParseError> {
        let at = self.pos;
        match self.chars.get(at).copied() {
            None => Err(error(at, format!("missing value after `{}:`", field.name))),
            Some(c) if c.is_whitespace() || c == ')' => {
                Err(error(at, format!("missing value after `{}:`", field.name)))
            }
            Some('"') => {
                let text = self.quoted()?;
                let expr = quoted_value(field, text, at)?;
                self.leaf(at, expr)
            }
            Some('[' | '{') => self.range(field, at),
            Some('>' | '<') => self.comparison(field, at),
            Some(_) => {
                let raw = self.run(|c| c.is_whitespace() || c == ')');
                let expr = unquoted_value(field, raw, at)?;
                self.leaf(at, expr)
            }
        }
    }

    /// `[lower TO upper]`, either bracket `{`/`}` for an exclusive bound,
    /// starting at `open`.
    fn range(&mut self, field: &Field, open: usize) -> Result<Expr, ParseError> {
        require_number(field, open, "ranges need a number field")?;
        let lower_inclusive = self.chars.get(open) == Some(&'[');
        self.pos = open + 1;
        let lower = self.bound(open)?;
        self.keyword_to(open)?;
        let upper = self.bound(open)?;
        self.skip_whitespace();
        let upper_inclusive = match self.chars.get(self.pos) {
            Some(']') => true,
            Some('}') => false,
            Some(_) => return Err(error(self.pos, "expected `]` or `}`")),
            None => return Err(error(open, "unclosed range")),
        };
        self.pos += 1;
        if let (Some(low), Some(high)) = (lower, upper)
            && low > high
        {
            return Err(error(open, "range is empty: lower bound above upper bound"));
        }
        let expr = Expr::Range {
            field: field.name.clone(),
            lower: make_bound(lower, lower_inclusive),
            upper: make_bound(upper, upper_inclusive),
        };
        self.leaf(open, expr)
    }

    /// One bound of a range: a number, or `*` (None) for no bound.
    fn bound(&mut self, open: usize) -> Result<Option<f64>, ParseError> {
        self.skip_whitespace();
        let at = self.pos;
        if at >= self.chars.len() {
            return Err(error(open, "unclosed range"));
        }
        let raw = self.run(|c| c.is_whitespace() || matches!(c, ']' | '}'));
        if raw == "*" {
            return Ok(None);
        }
        number(&raw)
            .map(Some)
            .ok_or_else(|| error(at, "expected a number or `*`"))
    }

    /// The ` TO ` between the bounds of a range.
    fn keyword_to(&mut self, open: usize) -> Result<(), ParseError> {
        self.skip_whitespace();
        let at = self.pos;
        if at >= self.chars.len() {
            return Err(error(open, "unclosed range"));
        }
        let is_to = self.chars[at..].starts_with(&['T', 'O'])
            && self.chars.get(at + 2).is_none_or(|c| c.is_whitespace());
        if !is_to {
            return Err(error(at, "expected `TO`"));
        }
        self.pos = at + 2;
        Ok(())
    }

    /// `>n`, `>=n`, `<n`, `<=n`, starting at `at`.
    fn comparison(&mut self, field: &Field, at: usize) -> Result<Expr, ParseError> {
        require_number(field, at, "comparisons need a number field")?;
        let greater = self.chars.get(at) == Some(&'>');
        let inclusive = self.chars.get(at + 1) == Some(&'=');
        self.pos = at + if inclusive { 2 } else { 1 };
        let value_at = self.pos;
        let raw = self.run(|c| c.is_whitespace() || c == ')');
        let Some(n) = number(&raw) else {
            return Err(error(value_at, format!("`{}` needs a number", field.name)));
        };
        let bound = make_bound(Some(n), inclusive);
        let (lower, upper) = if greater {
            (bound, Bound::Unbounded)
        } else {
            (Bound::Unbounded, bound)
        };
        let expr = Expr::Range {
            field: field.name.clone(),
            lower,
            upper,
        };
        self.leaf(at, expr)
    }

    /// A quoted string at the parser's position, unescaped; the position
    /// moves past the closing quote.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let open = self.pos;
        let mut text = String::new();
        let mut at = open + 1;
        while let Some(&c) = self.chars.get(at) {
            match (c, self.chars.get(at + 1)) {
                ('"', _) => {
                    self.pos = at + 1;
                    return Ok(text);
                }
                ('\\', Some(&next)) if matches!(next, '"' | '\\') => {
                    text.push(next);
                    at += 2;
                }
                _ => {
                    text.push(c);
                    at += 1;
                }
            }
        }
        Err(error(open, "unterminated quote"))
    }

    /// Counts one term, refusing the one past [`MAX_TERMS`].
    fn leaf(&mut self, at: usize, expr: Expr) -> Result<Expr, ParseError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(error(at, format!("more than {MAX_TERMS} terms")));
        }
        Ok(expr)
    }

    /// What starts at the parser's position, after whitespace (skipped).
    fn peek(&mut self) -> Peeked {
        self.skip_whitespace();
        let at = self.pos;
        let next = self.chars.get(at + 1).copied();
        let (token, len) = match self.chars.get(at) {
            None => (Token::End, 0),
            Some('(') => (Token::Open, 1),
            Some(')') => (Token::Close, 1),
            Some('!' | '-') => (Token::Op(Op::Not), 1),
            Some('&') if next == Some('&') => (Token::Op(Op::And), 2),
            Some('|') if next == Some('|') => (Token::Op(Op::Or), 2),
            Some(_) => self.word_operator(at),
        };
        Peeked { token, at, len }
    }

    /// `AND`, `OR` or `NOT` as a whole word at `at`, or else a term.
    fn word_operator(&self, at: usize) -> (Token, usize) {
        for (word, op) in [("AND", Op::And), ("OR", Op::Or), ("NOT", Op::Not)] {
            let len = word.len();
            let matches = self.chars[at..].iter().take(len).copied().eq(word.chars());
            if matches && self.ends_word(at + len) {
                return (Token::Op(op), len);
            }
        }
        (Token::Term, 0)
    }

    /// Whether a word ends before `at`: the end, whitespace, a parenthesis or a quote.
    fn ends_word(&self, at: usize) -> bool {
        self.chars
            .get(at)
            .is_none_or(|c| c.is_whitespace() || matches!(c, '(' | ')' | '"'))
    }

    /// The characters from the parser's position up to the first that `stop` accepts.
    fn run(&mut self, stop: impl Fn(char) -> bool) -> String {
        let rest = self.chars.get(self.pos..).unwrap_or_default();
        let len = rest.iter().take_while(|c| !stop(**c)).count();
        self.pos += len;
        rest[..len].iter().collect()
    }

    fn skip_whitespace(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    /// The input text of a token.
    fn text(&self, token: Peeked) -> String {
        self.chars[token.at..token.at + token.len].iter().collect()
    }
}

/// One more level of nesting for the `(` or NOT at `at`, refused past [`MAX_DEPTH`].
fn deeper(depth: usize, at: usize) -> Result<usize, ParseError> {
    if depth >= MAX_DEPTH {
        return Err(error(
            at,
            format!("nested deeper than {MAX_DEPTH} parentheses and NOTs"),
        ));
    }
    Ok(depth + 1)
}

/// Joins operands into an And (or an Or), flattening nested ones of the same
/// operator; a single operand stands alone.
fn join(items: Vec<Expr>, and: bool) -> Expr {
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match (item, and) {
            (Expr::And(inner), true) | (Expr::Or(inner), false) => flat.extend(inner),
            (other, _) => flat.push(other),
        }
    }
    if flat.len() == 1
        && let Some(only) = flat.pop()
    {
        return only;
    }
    if and { Expr::And(flat) } else { Expr::Or(flat) }
}

fn free(text: String, phrase: bool) -> Expr {
    Expr::Text {
        field: None,
        text,
        phrase,
    }
}

/// `field:"text"`: a phrase, an exact keyword, or an exact number.
fn quoted_value(field: &Field, text: String, at: usize) -> Result<Expr, ParseError> {
    let name = field.name.clone();
    match field.kind {
        FieldKind::Text => Ok(Expr::Text {
            field: Some(name),
            text,
            phrase: true,
        }),
        FieldKind::Keyword => Ok(Expr::Keyword {
            field: name,
            value: text,
            prefix: false,
        }),
        FieldKind::Number => exact_number(field, &text, at),
    }
}

/// `field:value` without quotes.
fn unquoted_value(field: &Field, raw: String, at: usize) -> Result<Expr, ParseError> {
    let name = field.name.clone();
    match field.kind {
        FieldKind::Text if raw == "*" => Ok(Expr::All),
        FieldKind::Text => Ok(Expr::Text {
            field: Some(name),
            text: raw,
            phrase: false,
        }),
        FieldKind::Keyword => {
            let (value, prefix) = match raw.strip_suffix('*') {
                Some(stem) => (stem.to_owned(), true),
                None => (raw, false),
            };
            Ok(Expr::Keyword {
                field: name,
                value,
                prefix,
            })
        }
        FieldKind::Number if raw == "*" => Ok(Expr::Range {
            field: name,
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
        }),
        FieldKind::Number => exact_number(field, &raw, at),
    }
}

/// `status:500` (exactly 500) or `status:5xx` (500 to 599).
fn exact_number(field: &Field, raw: &str, at: usize) -> Result<Expr, ParseError> {
    let Some((low, high)) = number(raw).map(|n| (n, n)).or_else(|| class(raw)) else {
        return Err(error(at, format!("`{}` needs a number", field.name)));
    };
    Ok(Expr::Range {
        field: field.name.clone(),
        lower: Bound::Included(low),
        upper: Bound::Included(high),
    })
}

/// A status class: a digit then `xx` in any case (`5xx` is 500 to 599).
fn class(raw: &str) -> Option<(f64, f64)> {
    let mut chars = raw.chars();
    let digit = chars.next()?.to_digit(10)?;
    let rest: String = chars.collect();
    if !rest.eq_ignore_ascii_case("xx") {
        return None;
    }
    let low = f64::from(digit * 100);
    Some((low, low + 99.0))
}

/// A decimal number: an optional `-`, digits, and optional `.` and digits.
fn number(raw: &str) -> Option<f64> {
    let unsigned = raw.strip_prefix('-').unwrap_or(raw);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !fraction.is_none_or(digits) {
        return None;
    }
    raw.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn require_number(field: &Field, at: usize, message: &str) -> Result<(), ParseError> {
    if field.kind == FieldKind::Number {
        Ok(())
    } else {
        Err(error(at, message))
    }
}

/// A range bound: None is unbounded (`*`).
fn make_bound(value: Option<f64>, inclusive: bool) -> Bound<f64> {
    match value {
        None => Bound::Unbounded,
        Some(n) if inclusive => Bound::Included(n),
        Some(n) => Bound::Excluded(n),
    }
}
