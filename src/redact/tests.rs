use super::{secrets, text, url};

/// Each form of password a connection string can carry, and what is printed instead.
const FORMS: &[(&str, &str)] = &[
    (
        "postgresql://u:secret@h:5432/db",
        "postgresql://u:***@h:5432/db",
    ),
    (
        "postgres://u:se%20cret@h/db?sslmode=require",
        "postgres://u:***@h/db?sslmode=require",
    ),
    (
        "redis://:secret@127.0.0.1:6379",
        "redis://:***@127.0.0.1:6379",
    ),
    ("redis://user:secret@h:6379/0", "redis://user:***@h:6379/0"),
    ("rediss://user:secret@h", "rediss://user:***@h"),
    (
        "postgres://u@h/db?password=secret",
        "postgres://u@h/db?password=***",
    ),
    (
        "postgres://u@h/db?sslmode=require&password=secret&application_name=a@b",
        "postgres://u@h/db?sslmode=require&password=***&application_name=a@b",
    ),
    (
        "postgres://u@h/db?PassWord=secret&%70assword=secret",
        "postgres://u@h/db?PassWord=***&%70assword=***",
    ),
    (
        "postgres://u@h/db?sslpassword=keypass",
        "postgres://u@h/db?sslpassword=***",
    ),
    (
        "redis://h:6379?password=secret",
        "redis://h:6379?password=***",
    ),
    (
        "redis://h/0?password=secret#frag",
        "redis://h/0?password=***#frag",
    ),
    (
        "redis://u:secret@h/0?password=other",
        "redis://u:***@h/0?password=***",
    ),
    (
        "host=h user=u password=secret dbname=d",
        "host=h user=u password=*** dbname=d",
    ),
    (
        "host=h password='se cret' dbname=d",
        "host=h password=*** dbname=d",
    ),
    (
        r"host=h password='a\'b c' dbname=d",
        "host=h password=*** dbname=d",
    ),
    (
        "host=h  password = secret   dbname=d",
        "host=h  password = ***   dbname=d",
    ),
    ("password=secret", "password=***"),
    (
        "host=h sslpassword=keypass sslkey=/k",
        "host=h sslpassword=*** sslkey=/k",
    ),
    ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
    ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
    ("postgres://u:pa?ss@h/db", "postgres://u:***@h/db"),
];

/// Strings without a password come back as they are.
const NO_PASSWORD: &[&str] = &[
    "postgres://u@h/db",
    "postgresql://h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem",
    "postgres://h:5432/db?application_name=a@b",
    "redis://127.0.0.1:6379",
    "redis://user@h:6379/0",
    "host=h user=u dbname=d",
    "host=h password_file=/p dbname=d",
    "",
];

#[test]
fn every_form_of_password_is_masked() {
    for (input, masked) in FORMS {
        assert_eq!(url(input), *masked, "{input}");
    }
}

#[test]
fn strings_without_a_password_are_unchanged() {
    for input in NO_PASSWORD {
        assert_eq!(url(input), *input);
    }
}

#[test]
fn urls_in_error_text_are_masked_where_they_stand() {
    for (input, masked) in FORMS {
        let message = format!(
            "cannot connect to PostgreSQL at {input}: connection refused; check postgres.url"
        );
        assert_eq!(
            text(&message, &[]),
            format!(
                "cannot connect to PostgreSQL at {masked}: connection refused; check postgres.url"
            )
        );
    }
    let json =
        r#"{"last_error":"cannot reach Redis at redis://:secret@h:1 within 1s","ready":"x"}"#;
    assert_eq!(
        text(json, &[]),
        r#"{"last_error":"cannot reach Redis at redis://:***@h:1 within 1s","ready":"x"}"#
    );
    let two = "postgres postgres://u:a1@h/db?password=b2, redis (redis://:c3@h).";
    assert_eq!(
        text(two, &[]),
        "postgres postgres://u:***@h/db?password=***, redis (redis://:***@h)."
    );
}

#[test]
fn ordinary_words_are_left_alone() {
    for s in [
        "FATAL: password authentication failed for user \"u\"",
        "the password is wrong",
        "x://y",
        "a ://b",
        "weird: password",
    ] {
        assert_eq!(text(s, &[]), s);
    }
    assert_eq!(
        text("password='x://y' host=h", &[]),
        "password=*** host=h",
        "a quoted value is not a URL"
    );
}

#[test]
fn known_secrets_are_masked_anywhere_longest_first() {
    assert_eq!(
        text("FATAL: no hunter22 for u", &["hunter22"]),
        "FATAL: no *** for u"
    );
    assert_eq!(
        text("x hunter22 y hunter2 z", &["hunter2", "hunter22"]),
        "x *** y *** z"
    );
    assert_eq!(
        text("a cat sat", &["a", "at"]),
        "a cat sat",
        "too short to mask as a substring"
    );
    assert_eq!(
        text("at redis://:abc@h", &["abc"]),
        "at redis://:***@h",
        "still masked where it stands"
    );
}

#[test]
fn secrets_are_the_passwords_as_written_and_as_sent() {
    let found = secrets(&[
        "postgres://u:se%20cret@h/db?sslpassword=kp1",
        r"host=h password='a\'b c' dbname=d",
        "redis://:r3d@h?password=q",
        "postgres://u@h/db",
    ]);
    for expected in [
        "se%20cret",
        "se cret",
        "kp1",
        r"'a\'b c'",
        "a'b c",
        "r3d",
        "q",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} in {found:?}"
        );
    }
    let message = "connecting as u with se cret and a'b c failed";
    let refs: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(
        text(message, &refs),
        "connecting as u with *** and *** failed"
    );
}

/// `password` written into each form as an operator would: percent-encoded in a URL, quoted
/// and escaped in key=value.
fn written_forms(password: &str) -> Vec<(String, String)> {
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let quoted = format!("'{}'", password.replace('\\', "\\\\").replace('\'', "\\'"));
    [
        format!("postgresql://u:{encoded}@h:5432/db?sslmode=require"),
        format!("postgres://u@h/db?application_name=x&password={encoded}"),
        format!("redis://:{encoded}@127.0.0.1:6379"),
        format!("redis://user:{encoded}@h:6379/0"),
        format!("redis://h:6379/0?password={encoded}"),
        format!("host=h user=u password={quoted} dbname=d"),
    ]
    .into_iter()
    .map(|form| (form, encoded.clone()))
    .chain([(
        format!("host=h password=Zq{} dbname=d", &encoded[2..]),
        format!("Zq{}", &encoded[2..]),
    )])
    .collect()
}

proptest::proptest! {
    #[test]
    fn no_written_password_survives(tail in "[ -~]{2,16}") {
        let password = format!("Zq{tail}");
        for (form, encoded) in written_forms(&password) {
            let masked = url(&form);
            proptest::prop_assert!(!masked.contains(&password) && !masked.contains(&encoded), "{form} -> {masked}");
            let message = text(&format!("cannot connect at {form}: refused"), &[]);
            proptest::prop_assert!(!message.contains(&password) && !message.contains(&encoded), "{form} -> {message}");
        }
    }
}
