//! The query language (placeholder until the parser lands: the types are final, `parse` is not).

/// What kind of values a field holds; the parser checks field names against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Tokenized, lowercased words.
    Text,
    /// Exact values.
    Keyword,
    /// Numbers, queried by value or range.
    Number,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every line.
    All,
    /// Every clause matches.
    And(Vec<Expr>),
    /// At least one clause matches.
    Or(Vec<Expr>),
    /// The clause does not match.
    Not(Box<Expr>),
    /// Words (or a phrase) of a text field; `None` = free text over message and path.
    Text {
        field: Option<String>,
        text: String,
        phrase: bool,
    },
    /// The exact (or prefix) value of a keyword field.
    Keyword {
        field: String,
        value: String,
        prefix: bool,
    },
    /// A range of a number field; `status:500` = [500, 500].
    Range {
        field: String,
        lower: std::ops::Bound<f64>,
        upper: std::ops::Bound<f64>,
    },
}

/// Why a query was refused, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// Char offset in the input.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {}: {}", self.position, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a query (placeholder).
pub fn parse(
    input: &str,
    field_kind: impl Fn(&str) -> Option<FieldKind>,
) -> Result<Expr, ParseError> {
    let _ = (input, field_kind);
    Err(ParseError {
        position: 0,
        message: "not yet".into(),
    })
}
