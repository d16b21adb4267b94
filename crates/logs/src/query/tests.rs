use super::*;
use std::ops::Bound::{Excluded, Included, Unbounded};

/// The fields of the access log, as the index declares them.
fn kind(name: &str) -> Option<FieldKind> {
    match name {
        "message" | "path" => Some(FieldKind::Text),
        "route" | "user" | "ip" | "method" | "level" | "kind" | "cache" | "layer" | "upstream"
        | "error" | "trace_id" => Some(FieldKind::Keyword),
        "status" | "latency_ms" | "bytes_in" | "bytes_out" | "attempts" => Some(FieldKind::Number),
        _ => None,
    }
}

fn ok(input: &str) -> Expr {
    match parse(input, kind) {
        Ok(expr) => expr,
        Err(e) => panic!("{input:?} should parse: {e}"),
    }
}

/// The error position and message for an input that must fail.
fn err(input: &str) -> (usize, String) {
    match parse(input, kind) {
        Ok(expr) => panic!("{input:?} should fail, parsed as {expr:?}"),
        Err(e) => (e.position, e.message),
    }
}

fn pos(input: &str) -> usize {
    err(input).0
}

fn word(text: &str) -> Expr {
    Expr::Text {
        field: None,
        text: text.into(),
        phrase: false,
    }
}

fn phrase(text: &str) -> Expr {
    Expr::Text {
        field: None,
        text: text.into(),
        phrase: true,
    }
}

fn text(field: &str, text: &str, phrase: bool) -> Expr {
    Expr::Text {
        field: Some(field.into()),
        text: text.into(),
        phrase,
    }
}

fn keyword(field: &str, value: &str) -> Expr {
    Expr::Keyword {
        field: field.into(),
        value: value.into(),
        prefix: false,
    }
}

fn prefix(field: &str, value: &str) -> Expr {
    Expr::Keyword {
        field: field.into(),
        value: value.into(),
        prefix: true,
    }
}

fn range(field: &str, lower: Bound<f64>, upper: Bound<f64>) -> Expr {
    Expr::Range {
        field: field.into(),
        lower,
        upper,
    }
}

fn exact(field: &str, n: f64) -> Expr {
    range(field, Included(n), Included(n))
}

fn and(items: Vec<Expr>) -> Expr {
    Expr::And(items)
}

fn or(items: Vec<Expr>) -> Expr {
    Expr::Or(items)
}

fn not(expr: Expr) -> Expr {
    Expr::Not(Box::new(expr))
}

// Terms.

#[test]
fn empty_blank_and_star_are_all() {
    assert_eq!(ok(""), Expr::All);
    assert_eq!(ok(" \t\n\u{3000}"), Expr::All);
    assert_eq!(ok("*"), Expr::All);
    assert_eq!(ok(" ( * ) "), Expr::All);
}

#[test]
fn free_words_are_separate_text_terms() {
    assert_eq!(ok("timeout"), word("timeout"));
    assert_eq!(
        ok("connection  refused"),
        and(vec![word("connection"), word("refused")])
    );
}

#[test]
fn free_text_with_a_phrase() {
    assert_eq!(
        ok(r#"upstream "connection reset" again"#),
        and(vec![
            word("upstream"),
            phrase("connection reset"),
            word("again")
        ])
    );
}

#[test]
fn phrase_escapes() {
    assert_eq!(ok(r#""say \"hi\" \\ \n""#), phrase(r#"say "hi" \ \n"#));
}

#[test]
fn lowercase_operators_and_words_containing_operators_are_words() {
    assert_eq!(
        ok("a and b or c not d"),
        and(["a", "and", "b", "or", "c", "not", "d"].map(word).to_vec())
    );
    assert_eq!(
        ok("ANDROID ORACLE NOTE"),
        and(vec![word("ANDROID"), word("ORACLE"), word("NOTE")])
    );
}

#[test]
fn dashes_inside_words_are_not_negation() {
    assert_eq!(ok("a-b"), word("a-b"));
}

#[test]
fn unicode_whitespace_separates() {
    assert_eq!(
        ok("é\u{00a0}ü\u{2003}x"),
        and(vec![word("é"), word("ü"), word("x")])
    );
}

#[test]
fn text_field() {
    assert_eq!(ok("message:timeout"), text("message", "timeout", false));
    assert_eq!(ok(r#"path:"/a b""#), text("path", "/a b", true));
    assert_eq!(ok("message:*"), Expr::All);
}

#[test]
fn keyword_values_are_kept_as_written() {
    assert_eq!(ok("user:42"), keyword("user", "42"));
    assert_eq!(ok("method:get"), keyword("method", "get"));
    assert_eq!(ok("method:GET"), keyword("method", "GET"));
    assert_eq!(ok("ip:10.0.0.1"), keyword("ip", "10.0.0.1"));
    assert_eq!(
        ok("upstream:127.0.0.1:8080"),
        keyword("upstream", "127.0.0.1:8080")
    );
    assert_eq!(ok("user:a@b.c_d-e"), keyword("user", "a@b.c_d-e"));
}

#[test]
fn keyword_routes_quoted_and_unquoted() {
    assert_eq!(
        ok(r#"route:"/events/{id}""#),
        keyword("route", "/events/{id}")
    );
    assert_eq!(ok("route:/events/{id}"), keyword("route", "/events/{id}"));
    assert_eq!(ok(r#"route:"a \"b\" \\""#), keyword("route", r#"a "b" \"#));
}

#[test]
fn keyword_prefix() {
    assert_eq!(ok("route:/api/*"), prefix("route", "/api/"));
    assert_eq!(ok("route:*"), prefix("route", ""));
    // Quoted values are exact: the star is part of the value.
    assert_eq!(ok(r#"route:"/api/*""#), keyword("route", "/api/*"));
}

#[test]
fn keyword_value_ends_at_close_paren() {
    assert_eq!(
        ok("(route:/a OR user:b)"),
        or(vec![keyword("route", "/a"), keyword("user", "b")])
    );
}

#[test]
fn number_exact_and_class() {
    assert_eq!(ok("status:500"), exact("status", 500.0));
    assert_eq!(
        ok("status:5xx"),
        range("status", Included(500.0), Included(599.0))
    );
    assert_eq!(
        ok("status:4XX"),
        range("status", Included(400.0), Included(499.0))
    );
    assert_eq!(ok("latency_ms:-2.25"), exact("latency_ms", -2.25));
    assert_eq!(ok(r#"status:"404""#), exact("status", 404.0));
    assert_eq!(ok("status:*"), range("status", Unbounded, Unbounded));
}

#[test]
fn number_comparisons() {
    assert_eq!(
        ok("latency_ms:>1000.5"),
        range("latency_ms", Excluded(1000.5), Unbounded)
    );
    assert_eq!(
        ok("latency_ms:>=1000"),
        range("latency_ms", Included(1000.0), Unbounded)
    );
    assert_eq!(
        ok("bytes_out:<10"),
        range("bytes_out", Unbounded, Excluded(10.0))
    );
    assert_eq!(
        ok("attempts:<=-1"),
        range("attempts", Unbounded, Included(-1.0))
    );
}

#[test]
fn number_ranges() {
    assert_eq!(
        ok("status:[500 TO 599]"),
        range("status", Included(500.0), Included(599.0))
    );
    assert_eq!(
        ok("status:{500 TO 599}"),
        range("status", Excluded(500.0), Excluded(599.0))
    );
    assert_eq!(
        ok("status:{400 TO *]"),
        range("status", Excluded(400.0), Unbounded)
    );
    assert_eq!(
        ok("status:[* TO 300}"),
        range("status", Unbounded, Excluded(300.0))
    );
    assert_eq!(
        ok("latency_ms:[ 0.5   TO\t2 ]"),
        range("latency_ms", Included(0.5), Included(2.0))
    );
}

#[test]
fn field_group_applies_to_each_term() {
    assert_eq!(
        ok(r#"status:(500 OR 4xx OR >=600)"#),
        or(vec![
            exact("status", 500.0),
            range("status", Included(400.0), Included(499.0)),
            range("status", Included(600.0), Unbounded),
        ])
    );
    assert_eq!(
        ok(r#"message:(timeout AND NOT "connection reset")"#),
        and(vec![
            text("message", "timeout", false),
            not(text("message", "connection reset", true)),
        ])
    );
    assert_eq!(
        ok("latency_ms:(-5 OR -(>10))"),
        or(vec![
            exact("latency_ms", -5.0),
            not(range("latency_ms", Excluded(10.0), Unbounded)),
        ])
    );
    assert_eq!(
        ok("upstream:(a:1 (b:2 c))"),
        and(vec![
            keyword("upstream", "a:1"),
            keyword("upstream", "b:2"),
            keyword("upstream", "c"),
        ])
    );
}

// Operators.

#[test]
fn operators_and_symbols_mean_the_same() {
    let expected = or(vec![and(vec![word("a"), word("b")]), not(word("c"))]);
    assert_eq!(ok("a AND b OR NOT c"), expected);
    assert_eq!(ok("a && b || !c"), expected);
    assert_eq!(ok("a b || -c"), expected);
}

#[test]
fn and_binds_tighter_than_or() {
    assert_eq!(
        ok("a OR b AND c"),
        or(vec![word("a"), and(vec![word("b"), word("c")])])
    );
    assert_eq!(
        ok("a AND b OR c"),
        or(vec![and(vec![word("a"), word("b")]), word("c")])
    );
}

#[test]
fn not_binds_tightest() {
    assert_eq!(ok("NOT a b"), and(vec![not(word("a")), word("b")]));
    assert_eq!(ok("NOT NOT a"), not(not(word("a"))));
    assert_eq!(ok("NOT(a OR b)"), not(or(vec![word("a"), word("b")])));
}

#[test]
fn minus_negates_a_field_term() {
    assert_eq!(ok("-status:500"), not(exact("status", 500.0)));
    assert_eq!(
        ok("level:error -route:/health"),
        and(vec![
            keyword("level", "error"),
            not(keyword("route", "/health"))
        ])
    );
}

#[test]
fn parentheses_group_and_nested_operators_flatten() {
    assert_eq!(
        ok("(a OR b) c"),
        and(vec![or(vec![word("a"), word("b")]), word("c")])
    );
    assert_eq!(
        ok("a AND (b AND (c d))"),
        and(["a", "b", "c", "d"].map(word).to_vec())
    );
    assert_eq!(
        ok("(a OR b) OR (c OR d)"),
        or(["a", "b", "c", "d"].map(word).to_vec())
    );
    assert_eq!(ok("((a))"), word("a"));
}

#[test]
fn parentheses_need_no_spaces() {
    assert_eq!(
        ok("(status:500)(user:x)"),
        and(vec![exact("status", 500.0), keyword("user", "x")])
    );
}

#[test]
fn realistic_query() {
    assert_eq!(
        ok(r#"status:5xx AND (route:/api/* OR message:"upstream timeout") -cache:hit"#),
        and(vec![
            range("status", Included(500.0), Included(599.0)),
            or(vec![
                prefix("route", "/api/"),
                text("message", "upstream timeout", true),
            ]),
            not(keyword("cache", "hit")),
        ])
    );
}

// Errors.

#[test]
fn unterminated_quote_is_at_the_quote_in_characters() {
    assert_eq!(err("é\"unterminated"), (1, "unterminated quote".into()));
    assert_eq!(pos("route:\"abc\\\""), 6);
}

#[test]
fn unknown_field_names_only_the_field() {
    assert_eq!(err("stauts:500"), (0, "unknown field `stauts`".into()));
    assert_eq!(pos("a -stauts:500"), 3);
    assert_eq!(pos("ü é stauts:[1 TO 2]"), 4);
}

#[test]
fn unbalanced_parentheses() {
    assert_eq!(err("(a OR b"), (0, "unmatched `(`".into()));
    assert_eq!(err("a)"), (1, "unmatched `)`".into()));
    assert_eq!(pos("é (a (b)"), 2);
    assert_eq!(pos(")"), 0);
    assert_eq!(pos("()"), 0);
    assert_eq!(pos("a ( )"), 2);
    assert_eq!(pos("status:(500"), 7);
}

#[test]
fn bad_numbers() {
    assert_eq!(err("status:abc"), (7, "`status` needs a number".into()));
    assert_eq!(pos("status:1e3"), 7);
    assert_eq!(pos("status:5.x"), 7);
    assert_eq!(pos("status:NaN"), 7);
    assert_eq!(pos("status:55xx"), 7);
    assert_eq!(pos("latency_ms:>abc"), 12);
    assert_eq!(pos("latency_ms:>"), 12);
    assert_eq!(pos("status:[1 TO x]"), 13);
    assert_eq!(pos(r#"status:"1 ""#), 7);
}

#[test]
fn missing_value_after_field() {
    assert_eq!(err("status:"), (7, "missing value after `status:`".into()));
    assert_eq!(pos("route: /a"), 6);
    assert_eq!(pos("(route:)"), 7);
}

#[test]
fn ranges_and_comparisons_need_a_number_field() {
    assert_eq!(
        err("route:[a TO b]"),
        (6, "ranges need a number field".into())
    );
    assert_eq!(pos("message:{a TO b}"), 8);
    assert_eq!(
        err("user:>5"),
        (5, "comparisons need a number field".into())
    );
}

#[test]
fn unclosed_or_malformed_ranges() {
    assert_eq!(err("status:[500 TO"), (7, "unclosed range".into()));
    assert_eq!(pos("status:[500 TO 599"), 7);
    assert_eq!(pos("status:["), 7);
    assert_eq!(err("status:[500 599]"), (12, "expected `TO`".into()));
    assert_eq!(pos("status:[500 TO 599 600]"), 19);
    assert_eq!(pos("status:[599 TO 500]"), 7);
}

#[test]
fn operators_missing_an_operand() {
    assert_eq!(err("a AND"), (2, "`AND` needs a term after it".into()));
    assert_eq!(err("OR b"), (0, "`OR` needs a term before it".into()));
    assert_eq!(err("NOT"), (0, "`NOT` needs a term after it".into()));
    assert_eq!(pos("a OR AND b"), 2);
    assert_eq!(pos("a && || b"), 2);
    assert_eq!(pos("(a OR)"), 3);
    assert_eq!(pos("a -"), 2);
    assert_eq!(pos("é AND"), 2);
}

#[test]
fn depth_limit() {
    let nested = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(ok(&nested(MAX_DEPTH)), word("a"));
    let (at, message) = err(&nested(MAX_DEPTH + 1));
    assert_eq!(at, MAX_DEPTH);
    assert!(message.contains("nested deeper"), "{message}");

    let nots = |n: usize| format!("{}a", "NOT ".repeat(n));
    assert!(parse(&nots(MAX_DEPTH), kind).is_ok());
    assert_eq!(pos(&nots(MAX_DEPTH + 1)), 4 * MAX_DEPTH);
    // Parentheses and NOT count together; a field group is a level too.
    assert_eq!(pos(&format!("{}!a", "(".repeat(MAX_DEPTH))), MAX_DEPTH);
    let groups = format!("{}status:(1)", "(".repeat(MAX_DEPTH));
    assert_eq!(pos(&groups), MAX_DEPTH + 7);
}

#[test]
fn term_limit() {
    let terms = |n: usize| vec!["a"; n].join(" ");
    assert!(parse(&terms(MAX_TERMS), kind).is_ok());
    let (at, message) = err(&terms(MAX_TERMS + 1));
    assert_eq!(at, 2 * MAX_TERMS);
    assert_eq!(message, format!("more than {MAX_TERMS} terms"));
}

#[test]
fn length_limit() {
    assert!(parse(&"a".repeat(MAX_QUERY_BYTES), kind).is_ok());
    assert_eq!(
        err(&"a ".repeat(2500)),
        (
            MAX_QUERY_BYTES,
            format!("query is longer than {MAX_QUERY_BYTES} bytes")
        )
    );
    // Two-byte characters: 2048 fit, the 2049th is the one past the limit.
    assert_eq!(pos(&"é".repeat(2049)), 2048);
}

#[test]
fn error_display() {
    let e = parse("a)", kind).unwrap_err();
    assert_eq!(e.to_string(), "unmatched `)` at position 1");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().ends_with("position 1"));
}

// Hostile input.

#[test]
fn hostile_nesting_is_refused_without_overflow() {
    let max = MAX_QUERY_BYTES;
    for input in [
        "(".repeat(max),
        ")".repeat(max),
        "!".repeat(max),
        "-".repeat(max),
        "NOT ".repeat(max / 4),
        "status:(".repeat(max / 8),
        "\"".repeat(max),
        "a AND ".repeat(max / 6),
    ] {
        assert!(parse(&input, kind).is_err(), "{input:.20}");
    }
    for input in ["[".repeat(max), "\\".repeat(max), "a:".repeat(max / 2)] {
        let _ = parse(&input, kind);
    }
}

/// A small xorshift generator, so that the sequence is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn step(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.step() % n as u64) as usize
    }
}

/// Pieces of the syntax, so that random inputs reach deep into the parser.
const PIECES: &[&str] = &[
    "(", ")", "\"", "\\", "*", ":", "[", "]", "{", "}", " ", ">", ">=", "<", "-", "!", "&&", "||",
    "AND", "OR", "NOT", "TO", "status:", "route:", "message:", "bogus:", "5xx", "500", "-1.5", "é",
    "\u{3000}", "a", "x",
];

#[test]
fn random_inputs_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..4000 {
        let len = rng.below(48);
        let input = if round % 2 == 0 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.step() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect()
        };
        match parse(&input, kind) {
            Ok(_) => {}
            Err(e) => assert!(
                e.position <= input.chars().count(),
                "{input:?}: {e} is past the end"
            ),
        }
    }
}
