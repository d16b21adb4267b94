//! From a parsed [`Expr`] to a tantivy [`Query`].

use std::ops::Bound;

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, InvertedIndexRangeQuery, Occur, PhraseQuery, Query,
    RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::{TextAnalyzer, TokenizerManager};

use crate::query::{Expr, ParseError};
use crate::schema::Fields;

/// Turns expressions into queries over one schema.
pub struct Translator {
    fields: Fields,
    analyzer: TextAnalyzer,
}

fn error(message: String) -> ParseError {
    ParseError {
        position: 0,
        message,
    }
}

impl Translator {
    pub fn new(fields: Fields) -> Translator {
        // The text fields use tantivy's "default" analyzer; queries must tokenize the same way.
        let analyzer = TokenizerManager::default()
            .get("default")
            .unwrap_or_else(|| TextAnalyzer::from(tantivy::tokenizer::SimpleTokenizer::default()));
        Translator { fields, analyzer }
    }

    /// The query for `expr`; an unknown field or a wrong kind is an error, never a panic.
    pub fn query(&self, expr: &Expr) -> Result<Box<dyn Query>, ParseError> {
        Ok(match expr {
            Expr::All => Box::new(AllQuery),
            Expr::And(items) => {
                let mut clauses = Vec::with_capacity(items.len() + 1);
                let mut positive = false;
                for item in items {
                    if let Expr::Not(inner) = item {
                        clauses.push((Occur::MustNot, self.query(inner)?));
                    } else {
                        positive = true;
                        clauses.push((Occur::Must, self.query(item)?));
                    }
                }
                if !positive {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Expr::Or(items) => {
                let clauses = items
                    .iter()
                    .map(|item| Ok((Occur::Should, self.query(item)?)))
                    .collect::<Result<Vec<_>, ParseError>>()?;
                if clauses.is_empty() {
                    Box::new(EmptyQuery)
                } else {
                    Box::new(BooleanQuery::new(clauses))
                }
            }
            Expr::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.query(inner)?),
            ])),
            Expr::Text {
                field: None,
                text,
                phrase,
            } => Box::new(BooleanQuery::new(vec![
                (Occur::Should, self.text(self.fields.message, text, *phrase)),
                (Occur::Should, self.text(self.fields.path, text, *phrase)),
            ])),
            Expr::Text {
                field: Some(name),
                text,
                phrase,
            } => match name.as_str() {
                "message" => self.text(self.fields.message, text, *phrase),
                // A quoted path is the exact path: `path:"/events/42"`.
                "path" if *phrase && text.starts_with('/') => Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.path_exact, text),
                    IndexRecordOption::Basic,
                )),
                "path" => self.text(self.fields.path, text, *phrase),
                other => return Err(error(format!("{other} is not a text field"))),
            },
            Expr::Keyword {
                field,
                value,
                prefix,
            } => self.keyword(field, value, *prefix)?,
            Expr::Range {
                field,
                lower,
                upper,
            } => self.range(field, *lower, *upper)?,
        })
    }

    /// Words of `text` in `field`: all of them (any order), or as a phrase.
    fn text(&self, field: Field, text: &str, phrase: bool) -> Box<dyn Query> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while let Some(token) = stream.next() {
            terms.push((token.position, Term::from_field_text(field, &token.text)));
        }
        match terms.len() {
            0 => Box::new(EmptyQuery),
            1 => Box::new(TermQuery::new(terms.remove(0).1, IndexRecordOption::Basic)),
            _ if phrase => Box::new(PhraseQuery::new_with_offset(terms)),
            _ => Box::new(BooleanQuery::new(
                terms
                    .into_iter()
                    .map(|(_, t)| {
                        (
                            Occur::Must,
                            Box::new(TermQuery::new(t, IndexRecordOption::Basic)) as Box<dyn Query>,
                        )
                    })
                    .collect(),
            )),
        }
    }

    fn keyword(&self, name: &str, value: &str, prefix: bool) -> Result<Box<dyn Query>, ParseError> {
        if !crate::schema::KEYWORD_FIELDS.contains(&name) {
            return Err(error(format!("{name} is not a keyword field")));
        }
        let field = self
            .fields
            .get(name)
            .ok_or_else(|| error(format!("unknown field {name}")))?;
        // Values the store writes in one case are matched in any case.
        let value = match name {
            "level" | "kind" | "cache" | "layer" | "request_kind" => value.to_lowercase(),
            "method" => value.to_uppercase(),
            _ => value.to_string(),
        };
        if prefix {
            return Ok(prefix_query(field, &value));
        }
        let words: Vec<&str> = if name == "cache" {
            value.split_whitespace().collect()
        } else {
            vec![&value]
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = words
            .into_iter()
            .map(|w| {
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, w),
                        IndexRecordOption::Basic,
                    )) as Box<dyn Query>,
                )
            })
            .collect();
        Ok(match clauses.len() {
            0 => Box::new(EmptyQuery),
            1 => clauses.remove(0).1,
            _ => Box::new(BooleanQuery::new(clauses)),
        })
    }

    fn range(
        &self,
        name: &str,
        lower: Bound<f64>,
        upper: Bound<f64>,
    ) -> Result<Box<dyn Query>, ParseError> {
        if !crate::schema::NUMBER_FIELDS.contains(&name) {
            return Err(error(format!("{name} is not a number field")));
        }
        let field = self
            .fields
            .get(name)
            .ok_or_else(|| error(format!("unknown field {name}")))?;
        for b in [lower, upper] {
            if let Bound::Included(v) | Bound::Excluded(v) = b
                && v.is_nan()
            {
                return Err(error("not a number".into()));
            }
        }
        if name == "latency_ms" {
            // Both bounds are always set: tantivy wants at least one.
            let lo = match lower {
                Bound::Unbounded => Bound::Included(f64::MIN),
                b => b,
            };
            let hi = match upper {
                Bound::Unbounded => Bound::Included(f64::MAX),
                b => b,
            };
            return Ok(Box::new(RangeQuery::new(
                lo.map(|v| Term::from_field_f64(field, v)),
                hi.map(|v| Term::from_field_f64(field, v)),
            )));
        }
        match u64_range(lower, upper) {
            Some((lo, hi)) => Ok(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(field, lo)),
                Bound::Included(Term::from_field_u64(field, hi)),
            ))),
            None => Ok(Box::new(EmptyQuery)),
        }
    }
}

/// The inclusive u64 range holding the integers within the bounds, if any.
pub fn u64_range(lower: Bound<f64>, upper: Bound<f64>) -> Option<(u64, u64)> {
    const MAX: f64 = u64::MAX as f64;
    let lo = match lower {
        Bound::Unbounded => 0.0,
        Bound::Included(v) => v.ceil(),
        Bound::Excluded(v) => v.floor() + 1.0,
    }
    .max(0.0);
    let hi = match upper {
        Bound::Unbounded => MAX,
        Bound::Included(v) => v.floor(),
        Bound::Excluded(v) => v.ceil() - 1.0,
    };
    if hi < 0.0 || lo > hi || lo >= MAX {
        return None;
    }
    // `as` saturates: values past u64::MAX become u64::MAX.
    Some((lo as u64, hi.min(MAX) as u64))
}

/// Terms of `field` starting with `prefix`: the term range [prefix, next prefix).
fn prefix_query(field: Field, prefix: &str) -> Box<dyn Query> {
    let lower = Bound::Included(Term::from_field_text(field, prefix));
    let upper = match prefix_successor(prefix.as_bytes()) {
        Some(next) => Bound::Excluded(Term::from_field_bytes(field, &next)),
        None => Bound::Unbounded,
    };
    Box::new(InvertedIndexRangeQuery::new(lower, upper))
}

/// The smallest byte string greater than every string starting with `prefix`.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ranges() {
        assert_eq!(
            u64_range(Bound::Included(500.0), Bound::Included(500.0)),
            Some((500, 500))
        );
        assert_eq!(
            u64_range(Bound::Excluded(1000.0), Bound::Unbounded),
            Some((1001, u64::MAX))
        );
        assert_eq!(
            u64_range(Bound::Included(1.5), Bound::Excluded(3.0)),
            Some((2, 2))
        );
        assert_eq!(u64_range(Bound::Unbounded, Bound::Excluded(0.0)), None);
        assert_eq!(
            u64_range(Bound::Included(-5.0), Bound::Included(-1.0)),
            None
        );
        assert_eq!(u64_range(Bound::Included(1e30), Bound::Unbounded), None);
    }

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(&[0xff]), None);
    }
}
