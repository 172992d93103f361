use super::*;
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json(kind: &Kind, text: &str) -> String {
    let mut out = String::new();
    write_json(kind, text, &mut out).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    out
}

fn array(element: Kind) -> Kind {
    Kind::Array(Box::new(element), b',')
}

fn vector(element: Kind) -> Kind {
    Kind::Vector(Box::new(element))
}

fn composite(fields: &[(&str, Kind)]) -> Kind {
    Kind::Composite(
        fields
            .iter()
            .map(|(name, kind)| Field {
                name: name.to_string(),
                kind: kind.clone(),
            })
            .collect(),
    )
}

/// `CREATE TYPE pair AS (f1 int, f2 text)`
fn pair() -> Kind {
    composite(&[("f1", Kind::Int), ("f2", Kind::Text)])
}

/// (kind, text output, to_jsonb's value), each checked against PostgreSQL 15.
fn confirmed() -> Vec<(Kind, &'static str, String)> {
    use Kind::*;
    let zeros = |n| "0".repeat(n);
    let s = |v: &str| v.to_owned();
    vec![
        (Bool, "t", s("true")),
        (Bool, "f", s("false")),
        (Int, "-9223372036854775808", s("-9223372036854775808")),
        (Numeric, "1.10", s("1.10")),
        (Numeric, "3.00", s("3.00")),
        (
            Numeric,
            "12345678901234567890.123456789",
            s("12345678901234567890.123456789"),
        ),
        (Numeric, "NaN", s(r#""NaN""#)),
        (Numeric, "-Infinity", s(r#""-Infinity""#)),
        (Float, "1e+100", format!("1{}", zeros(100))),
        (Float, "1.5e-07", s("0.00000015")),
        (Float, "-1.5e-07", s("-0.00000015")),
        (Float, "1.2345678901234568e+20", s("123456789012345680000")),
        (Float, "3.4028235e+38", format!("34028235{}", zeros(31))),
        (Float, "1e-05", s("0.00001")),
        (Float, "-0", s("0")),
        (Float, "0.1", s("0.1")),
        (Float, "Infinity", s(r#""Infinity""#)),
        (Kind::of_builtin(26).unwrap(), "123", s(r#""123""#)),
        (
            Text,
            "a\"b\\c\n\t\u{1}é€😀",
            s(r#""a\"b\\c\n\t\u0001é€😀""#),
        ),
        (Text, "ab   ", s(r#""ab   ""#)),
        (Date, "0044-03-15 BC", s(r#""0044-03-15 BC""#)),
        (TimeTz, "03:04:05+02", s(r#""03:04:05+02""#)),
        (
            Timestamp,
            "2026-01-02 03:04:05.123456",
            s(r#""2026-01-02T03:04:05.123456""#),
        ),
        (
            Timestamp,
            "0044-03-15 03:00:00 BC",
            s(r#""0044-03-15T03:00:00 BC""#),
        ),
        (Timestamp, "infinity", s(r#""infinity""#)),
        (
            TimestampTz,
            "2026-01-02 03:04:05.5+00",
            s(r#""2026-01-02T03:04:05.5+00:00""#),
        ),
        (
            TimestampTz,
            "2026-01-02 08:34:05+05:30",
            s(r#""2026-01-02T08:34:05+05:30""#),
        ),
        (
            TimestampTz,
            "1899-12-31 19:32:20-04:27:40",
            s(r#""1899-12-31T19:32:20-04:27:40""#),
        ),
        (
            TimestampTz,
            "0044-03-15 03:00:00+00 BC",
            s(r#""0044-03-15T03:00:00+00:00 BC""#),
        ),
        (TimestampTz, "-infinity", s(r#""-infinity""#)),
        (Bytea, r"\x0102ff", s(r#""\\x0102ff""#)),
        (
            Interval,
            "1 year 2 mons 3 days 04:05:06.5",
            s(r#""1 year 2 mons 3 days 04:05:06.5""#),
        ),
        (
            Json,
            r#"{"b": 1, "a": [1e5, 1.0E+2, -0, 0.5e-3], "b": {"z": "\u0041"}}"#,
            s(r#"{"a":[100000,100,0,0.0005],"b":{"z":"A"}}"#),
        ),
        (Json, " \"s\" ", s(r#""s""#)),
        (Jsonb, r#"{"a": [1, 2.50]}"#, s(r#"{"a":[1,2.50]}"#)),
        (array(Int), "{1,2,NULL}", s("[1,2,null]")),
        (array(Int), "[0:1][1:2]={{1,2},{3,4}}", s("[[1,2],[3,4]]")),
        (array(Int), "{}", s("[]")),
        (
            array(Text),
            r#"{"a b","c,d","e\"f","NULL",NULL,"","x\\y","{}"}"#,
            s(r#"["a b","c,d","e\"f","NULL",null,"","x\\y","{}"]"#),
        ),
        (
            array(Float),
            "{1e+100,NaN,-0,1.5e-07}",
            format!(r#"[1{},"NaN",0,0.00000015]"#, zeros(100)),
        ),
        (
            array(Bytea),
            r#"{"\\x01ff",NULL}"#,
            s(r#"["\\x01ff",null]"#),
        ),
        (
            array(Jsonb),
            r#"{"{\"a\": 1}","null","\"x\""}"#,
            s(r#"[{"a":1},null,"x"]"#),
        ),
        (
            array(TimestampTz),
            r#"{"2026-01-02 03:04:05+00",infinity}"#,
            s(r#"["2026-01-02T03:04:05+00:00","infinity"]"#),
        ),
        (array(array(Int)), r#"{"{1,2}","{3}"}"#, s("[[1,2],[3]]")),
        (
            Kind::Array(Box::new(OtherText), b';'),
            "{(3,4),(1,2);(5.5,8),(-7,6);NULL}",
            s(r#"["(3,4),(1,2)","(5.5,8),(-7,6)",null]"#),
        ),
        (
            Kind::Array(Box::new(OtherText), b';'),
            r#"{{(3,4),(1,2);"a;b"};{"(0,0),(1,1)";NULL}}"#,
            s(r#"[["(3,4),(1,2)","a;b"],["(0,0),(1,1)",null]]"#),
        ),
        (vector(Int), "1 2 -32768", s("[1,2,-32768]")),
        (vector(Int), "", s("[]")),
        (
            vector(OtherText),
            "23 4294967295",
            s(r#"["23","4294967295"]"#),
        ),
        (array(vector(Int)), r#"{"1 2","",3}"#, s("[[1,2],[],[3]]")),
    ]
}

#[test]
fn texts_become_what_to_jsonb_gives() {
    for (kind, text, expected) in confirmed() {
        let got: serde_json::Value = serde_json::from_str(&json(&kind, text)).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
        assert_eq!(got, expected, "{kind:?} {text:?}");
    }
    assert_eq!(json(&Kind::Float, "1.5e-07"), "0.00000015");
    assert_eq!(json(&Kind::Json, "0e999999999999").len(), 1);
    assert_eq!(json(&Kind::Json, "1e131071").len(), 131072);
    assert_eq!(
        json(&Kind::Json, r#"{"bb":1,"a":2,"c":3}"#),
        r#"{"a":2,"c":3,"bb":1}"#
    );
}

/// Record literals (kind, record_out's text, to_jsonb's value), each checked against
/// PostgreSQL 15.
#[test]
fn records_become_objects() {
    use Kind::*;
    let nest = composite(&[
        ("p", pair()),
        ("ps", array(pair())),
        ("ts", TimestampTz),
        ("j", Jsonb),
        ("b", Bool),
    ]);
    let cases = [
        (pair(), "(1,foo)", r#"{"f1":1,"f2":"foo"}"#),
        (pair(), "(,)", r#"{"f1":null,"f2":null}"#),
        (pair(), r#"(4,"")"#, r#"{"f1":4,"f2":""}"#),
        (pair(), "(3,NULL)", r#"{"f1":3,"f2":"NULL"}"#),
        (pair(), r" (1,a\,b) ", r#"{"f1":1,"f2":"a,b"}"#),
        (
            pair(),
            "(,\"a,b\"\"c\\\\d(e) f\n\tü€😀\")",
            r#"{"f1":null,"f2":"a,b\"c\\d(e) f\n\tü€😀"}"#,
        ),
        (
            nest.clone(),
            r#"("(3,""x """"y"""" \\\\z"")","{""(4,\\""\\"")"",""(,\\""(,)\\"")""}","2026-01-01 21:34:05.5+00","{""a"": [1, 2.50], ""b"": 1}",t)"#,
            r#"{"b": true, "j": {"a": [1, 2.50], "b": 1}, "p": {"f1": 3, "f2": "x \"y\" \\z"},
                "ps": [{"f1": 4, "f2": ""}, {"f1": null, "f2": "(,)"}], "ts": "2026-01-01T21:34:05.5+00:00"}"#,
        ),
        (
            array(nest),
            r#"{"(\"(1,\"\"a b\"\")\",,,,)"}"#,
            r#"[{"b": null, "j": null, "p": {"f1": 1, "f2": "a b"}, "ps": null, "ts": null}]"#,
        ),
        (
            array(pair()),
            r#"{"(1,foo)","(2,\"a,b\")",NULL,"(,)"}"#,
            r#"[{"f1":1,"f2":"foo"},{"f1":2,"f2":"a,b"},null,{"f1":null,"f2":null}]"#,
        ),
        (composite(&[]), "()", "{}"),
        (composite(&[("x", Text)]), "()", r#"{"x":null}"#),
        (composite(&[("x", Text)]), r#"(" ")"#, r#"{"x":" "}"#),
        (
            composite(&[("odd \"key\", here", Text)]),
            "(v)",
            r#"{"odd \"key\", here":"v"}"#,
        ),
    ];
    for (kind, text, expected) in cases {
        let got: serde_json::Value = serde_json::from_str(&json(&kind, text)).unwrap();
        assert_eq!(
            got,
            serde_json::from_str::<serde_json::Value>(expected).unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn malformed_texts_are_errors() {
    let int_array = array(Kind::Int);
    for (kind, text) in [
        (&Kind::Bool, "x"),
        (&Kind::Int, "1-"),
        (&Kind::Float, "1e131072"),
        (&Kind::Json, "[1.5e-16383]"),
        (&Kind::Json, "{"),
        (&vector(Kind::Int), "1 x"),
    ] {
        assert!(
            write_json(kind, text, &mut String::new()).is_err(),
            "{text:?}"
        );
    }
    for text in [
        "{1,2",
        "{1}x",
        "1,2",
        r#"{"a}"#,
        "{,}",
        "[0:1]{1}",
        "{{{{{{{1}}}}}}}",
        "{a\"b}",
        "{1\\",
    ] {
        let mut out = String::from("[");
        let err = write_json(&int_array, text, &mut out);
        assert!(
            matches!(err, Err(ValueError::Array { .. })),
            "{text:?}: {err:?}"
        );
        assert_eq!(out, "[", "{text:?}");
    }
    for text in [
        "",
        "1,2",
        "(1,foo",
        "(1)",
        "(1,2,3)",
        "(1,\"x)",
        "(1,2)x",
        "(1,a\\",
        "(1,2,)",
        "(1,\"a\"\")",
    ] {
        let mut out = String::from("[");
        let err = write_json(&pair(), text, &mut out);
        assert!(
            matches!(err, Err(ValueError::Record { fields: 2, .. })),
            "{text:?}: {err:?}"
        );
        assert_eq!(out, "[", "{text:?}");
    }
    let err = write_json(&pair(), "(x,y)", &mut String::new());
    assert!(
        matches!(err, Err(ValueError::Number(_))),
        "a field is converted by its kind: {err:?}"
    );
}

/// An array literal as array_out writes it.
fn array_literal(items: &[Option<String>]) -> String {
    let quote = |s: &String| {
        let plain = !s.is_empty() && !s.eq_ignore_ascii_case("NULL");
        if plain && !s.contains(|c: char| "{}\",\\ \t\n\r\x0b\x0c".contains(c)) {
            return s.clone();
        }
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let items: Vec<String> = items
        .iter()
        .map(|i| i.as_ref().map_or("NULL".into(), quote))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// A record literal as record_out writes it: quoted when empty or holding a quote, backslash,
/// parenthesis, comma or space; quotes and backslashes doubled.
fn record_literal(fields: &[Option<String>]) -> String {
    let quote = |s: &String| {
        if !s.is_empty() && !s.contains(|c: char| "\"\\(), \t\n\r\x0b\x0c".contains(c)) {
            return s.clone();
        }
        format!("\"{}\"", s.replace('"', "\"\"").replace('\\', "\\\\"))
    };
    let fields: Vec<String> = fields
        .iter()
        .map(|f| f.as_ref().map_or(String::new(), quote))
        .collect();
    format!("({})", fields.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn text_arrays_round_trip(items in proptest::collection::vec(proptest::option::of(".*"), 0..6)) {
        let got: Vec<Option<String>> = serde_json::from_str(&json(&array(Kind::Text), &array_literal(&items))).unwrap();
        prop_assert_eq!(got, items);
    }

    #[test]
    fn text_records_round_trip(fields in texts(0..6)) {
        let names: Vec<String> = (0..fields.len()).map(|i| format!("f{i}")).collect();
        let kind = composite(&names.iter().map(|n| (n.as_str(), Kind::Text)).collect::<Vec<_>>());
        let got: Map<String, Value> =
            serde_json::from_str(&json(&kind, &record_literal(&fields))).unwrap();
        let want = names.into_iter().zip(fields.into_iter().map(Value::from)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn nested_records_round_trip(text in option::of(".*"), inner in texts(2..3), n in 0..3usize) {
        let kind = composite(&[
            ("t", Kind::Text),
            ("r", pair_of_texts()),
            ("rs", array(pair_of_texts())),
        ]);
        let inner_text = record_literal(&inner);
        let list = array_literal(&vec![Some(inner_text.clone()); n]);
        let literal = record_literal(&[text.clone(), Some(inner_text), Some(list)]);
        let got: Value = serde_json::from_str(&json(&kind, &literal)).unwrap();
        let record = serde_json::json!({"a": inner[0], "b": inner[1]});
        let want = serde_json::json!({"t": text, "r": record, "rs": vec![record.clone(); n]});
        prop_assert_eq!(got, want);
    }

    #[test]
    fn floats_keep_their_value(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        prop_assume!(x.is_finite());
        let got: f64 = json(&Kind::Float, &format!("{x:e}")).parse().unwrap();
        prop_assert_eq!(got, if x == 0.0 { 0.0 } else { x });
    }

    #[test]
    fn any_text_gives_valid_json_or_an_error(text in ".*|[{}()\",\\\\a-c0-9 .eE+-]*") {
        let kinds = [
            Kind::Bool, Kind::Numeric, Kind::Json, Kind::TimestampTz,
            array(array(Kind::Float)), pair(), array(pair()),
        ];
        for kind in kinds {
            let mut out = String::new();
            if write_json(&kind, &text, &mut out).is_ok() {
                prop_assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{:?} {:?}", text, out);
            }
        }
    }
}

/// `CREATE TYPE texts AS (a text, b text)`
fn pair_of_texts() -> Kind {
    composite(&[("a", Kind::Text), ("b", Kind::Text)])
}

/// Up to `len` texts, each maybe NULL.
fn texts(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Option<String>>> {
    proptest::collection::vec(option::of(".*"), len)
}
