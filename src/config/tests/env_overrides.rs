//! `WAGATE_<SECTION>__<KEY>` overrides: types, precedence, what is ignored,
//! and errors that name the variable.

use std::time::Duration;

use super::env;
use crate::config::overrides;
use crate::config::{Config, ConfigError, LogFormat};

#[test]
fn overrides_set_keys_of_every_type_and_win_over_the_file() {
    let file = "[upstream]\nbase_url = \"https://graph.facebook.com\"\ntimeout = \"60s\"\n[limits]\nmax_in_flight = 10\n";
    let c = Config::from_toml_str(
        file,
        &env(&[
            ("WAGATE_UPSTREAM__BASE_URL", "http://127.0.0.1:8081"),
            ("WAGATE_UPSTREAM__TIMEOUT", "5s"),
            ("WAGATE_LIMITS__MAX_IN_FLIGHT", "100"),
            ("WAGATE_LISTEN__PROXY", "127.0.0.1:18080"),
            ("WAGATE_LOG__FORMAT", "json"),
            ("WAGATE_STORE__PATH", "/var/lib/wagate/breakers.db"),
            ("WAGATE_ADMIN__TOKEN", "12345"),
        ]),
    )
    .expect("overrides apply");
    assert_eq!(c.upstream.base_url.to_string(), "http://127.0.0.1:8081");
    assert_eq!(c.upstream.timeout, Duration::from_secs(5));
    assert_eq!(c.limits.max_in_flight, 100);
    assert_eq!(c.listen.proxy.port(), 18080);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.store.path,
        std::path::PathBuf::from("/var/lib/wagate/breakers.db")
    );
    // A numeric-looking token stays a string because the key is a string.
    assert_eq!(c.admin.token.expose(), "12345");
}

#[test]
fn admin_client_variables_and_others_are_not_overrides() {
    let c = Config::from_toml_str(
        "",
        &env(&[
            ("WAGATE_ADMIN_URL", "http://127.0.0.1:9090"),
            ("WAGATE_ADMIN_TOKEN", "client-token"),
            ("PATH", "/usr/bin"),
            ("wagate_admin__token", "lowercase-prefix"),
        ]),
    )
    .expect("ignored variables");
    assert_eq!(c, Config::default());
}

#[test]
fn override_of_unknown_key_or_section_names_the_variable() {
    for (var, needle) in [
        (
            "WAGATE_UPSTREAM__RETRIES",
            "unknown key `retries` in section [upstream]",
        ),
        ("WAGATE_UPSTREAMS__TIMEOUT", "unknown section `upstreams`"),
        ("WAGATE_UPSTREAM__", "unknown key `` in section [upstream]"),
    ] {
        let err = Config::from_toml_str("", &env(&[(var, "1")])).expect_err(var);
        assert!(matches!(err, ConfigError::Override { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{var}: ")), "{text}");
        assert!(text.contains(needle), "{text}");
    }
}

#[test]
fn override_with_a_bad_value_names_variable_and_key() {
    let err = Config::from_toml_str("", &env(&[("WAGATE_LIMITS__MAX_IN_FLIGHT", "abc")]))
        .expect_err("not an integer");
    let text = err.to_string();
    assert!(text.starts_with("WAGATE_LIMITS__MAX_IN_FLIGHT: "), "{text}");
    assert!(
        text.contains("limits.max_in_flight expects an integer, got `abc`"),
        "{text}"
    );

    // Type-correct but invalid values are caught later, blamed on the variable.
    for (var, value, key) in [
        ("WAGATE_UPSTREAM__TIMEOUT", "soon", "upstream.timeout"),
        ("WAGATE_LIMITS__MAX_IN_FLIGHT", "0", "limits.max_in_flight"),
    ] {
        let err = Config::from_toml_str("", &env(&[(var, value)])).expect_err(var);
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(
            err.to_string().contains(&format!("(set by {var})")),
            "{err}"
        );
    }
}

#[test]
fn overrides_skip_arrays_of_tables_and_nested_tables() {
    // The shape later sections add: `[breaker]` with a nested table and
    // `[[rules]]`. Scalar keys stay overridable; the rest is refused by name.
    let defaults: toml::Table =
        "[breaker]\nmin_open = \"1m\"\n[breaker.ramp]\nstages = 3\n[[rules]]\ncode = 131031\n"
            .parse()
            .expect("defaults");
    let mut doc: toml::Table = "[[rules]]\ncode = 368\n[[rules]]\ncode = 131031\n"
        .parse()
        .expect("doc");
    let applied = overrides::apply(
        &mut doc,
        &defaults,
        &env(&[("WAGATE_BREAKER__MIN_OPEN", "5m")]),
    )
    .expect("scalar override");
    assert_eq!(applied.len(), 1);
    assert_eq!(doc["breaker"]["min_open"].as_str(), Some("5m"));
    assert_eq!(doc["rules"].as_array().map(Vec::len), Some(2));

    for var in [
        "WAGATE_RULES__CODE",
        "WAGATE_BREAKER__RAMP",
        "WAGATE_BREAKER__RAMP__STAGES",
    ] {
        let err =
            overrides::apply(&mut doc.clone(), &defaults, &env(&[(var, "1")])).expect_err(var);
        assert!(err.to_string().starts_with(&format!("{var}: ")), "{err}");
    }
}
