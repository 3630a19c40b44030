//! What the parsers' property tests share: a bounded configuration and
//! strategies for JSON and for text a parser should not trust.
//!
//! Each parser's properties live beside it (`<module>/props.rs`); their case
//! counts are chosen so the whole set adds seconds, not minutes, to
//! `cargo xtask test`. `PROPTEST_CASES=N` runs every property N times instead
//! (a longer run; `cargo xtask fuzz` is the long one).

use proptest::prelude::*;
use serde_json::{Map, Value};

/// `cases` runs per property (or `PROPTEST_CASES`), and no regression files
/// written into the source tree: every failure found becomes a unit test
/// holding its input instead.
pub fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text with what breaks naive parsers: quotes, backslashes, control
/// characters, NUL, multi-byte and astral characters, a BOM, `/*` and `//`.
pub fn odd_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z0-9 ._/:-]{0,6}",
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("//".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just(",".to_owned()),
        Just("}".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\n".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("é".to_owned()),
        Just("日本".to_owned()),
        Just("\u{1F600}".to_owned()),
        Just("\u{202e}".to_owned()),
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

/// Any JSON value, a few levels deep, with odd strings and keys.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u16>().prop_map(Value::from),
        // Fractions exact in binary and in short decimal: serde_json reads
        // some long floats a bit off, which is not the parsers' business.
        (any::<i16>(), 0u32..5).prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
        odd_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((odd_text(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}
