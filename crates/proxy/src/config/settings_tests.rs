//! Unit tests of the settings table: each key is written once, and the table and the raw
//! form (what gate.toml accepts) name the same keys.

use super::*;

#[test]
fn indexed_keys_find_their_setting() {
    assert_eq!(
        setting("route[2].upstream").map(|s| s.flag),
        Some(Some("--upstream"))
    );
    assert!(setting("server.listen").is_some_and(|s| s.apply.needs_restart()));
    assert!(setting("server.nonsense").is_none());
}

#[test]
fn keys_are_unique() {
    for (i, a) in SETTINGS.iter().enumerate() {
        assert!(
            SETTINGS[i + 1..].iter().all(|b| b.key != a.key),
            "{} twice",
            a.key
        );
    }
}

/// Stops a deserialization once it has said which fields its struct has.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// A deserializer that records the field names a `#[derive(Deserialize)]` struct accepts
/// (after renames): the keys gate.toml accepts in that section.
struct FieldsOf<'a>(&'a mut Vec<&'static str>);

impl<'de> serde::Deserializer<'de> for FieldsOf<'_> {
    type Error = Stop;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend(fields);
        Err(Stop)
    }

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn fields_of<'de, T: serde::Deserialize<'de>>() -> Vec<&'static str> {
    let mut v = Vec::new();
    let _ = T::deserialize(FieldsOf(&mut v));
    v
}

/// Every key gate.toml accepts is a setting of the table, and every setting of the table
/// is a key gate.toml accepts: a key added to the raw form and not to the table (or the
/// other way round) fails here.
#[test]
fn the_table_and_the_raw_form_name_the_same_keys() {
    use crate::config::raw::{RawRoute, RawServer, RawTimeouts, RawTunnel};
    // Structure, not settings: the routes written inside a `[[server]]` block.
    let structural = ["server.route"];
    let mut accepted: Vec<String> = Vec::new();
    for (section, fields) in [
        ("server", fields_of::<RawServer>()),
        ("timeouts", fields_of::<RawTimeouts>()),
        ("route", fields_of::<RawRoute>()),
        ("tcp", fields_of::<RawTunnel>()),
    ] {
        assert!(!fields.is_empty(), "{section}: no fields seen");
        for f in fields {
            let key = format!("{section}.{f}");
            if !structural.contains(&key.as_str()) {
                accepted.push(key);
            }
        }
    }
    for key in &accepted {
        assert!(
            setting(key).is_some(),
            "gate.toml accepts {key}, but the settings table has no such key"
        );
    }
    for s in SETTINGS {
        assert!(
            accepted.iter().any(|k| k == s.key),
            "the settings table has {}, but gate.toml does not accept it",
            s.key
        );
    }
}

#[test]
fn restart_flags_come_from_the_table() {
    assert_eq!(
        restart_flags("server."),
        [
            "--listen",
            "--admin-listen",
            "--threads",
            "--inventory",
            "--inventory-poll"
        ]
    );
    assert_eq!(restart_flags("tcp."), ["--listen"]);
}
