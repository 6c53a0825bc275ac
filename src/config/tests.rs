use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

mod env_overrides;
mod redaction;

const SHIPPED: &str = include_str!("../../config/wagate.toml");

fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, &no_env())
}

#[test]
fn shipped_file_equals_the_defaults() {
    let shipped = parse(SHIPPED).expect("config/wagate.toml parses");
    assert_eq!(shipped, Config::default());
    assert_eq!(
        shipped.to_redacted_toml(),
        Config::default().to_redacted_toml()
    );
}

#[test]
fn shipped_file_names_the_variable_of_every_key() {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults render");
    for (section, keys) in &defaults {
        // The arrays of tables have no default entries.
        let Some(keys) = keys.as_table() else {
            assert!(
                ["rules", "event_rules", "wabas"].contains(&section.as_str()),
                "{section}"
            );
            continue;
        };
        for key in keys.keys() {
            let var = format!("WAGATE_{}__{}", section, key).to_uppercase();
            assert!(
                SHIPPED.contains(&var),
                "config/wagate.toml does not mention {var}"
            );
            assert!(
                SHIPPED.contains(&format!("\n{key} = ")),
                "config/wagate.toml does not set {section}.{key}"
            );
        }
    }
}

#[test]
fn load_without_path_reads_the_shipped_file() {
    // `cargo test` runs in the crate root, where config/wagate.toml lives.
    let config = Config::load(None, &no_env()).expect("default path loads");
    assert_eq!(config, Config::default());
}

#[test]
fn load_reads_the_given_file_and_applies_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wagate.toml");
    std::fs::write(&path, "[limits]\nmax_in_flight = 7\n").expect("write config");
    let config = Config::load(
        Some(&path),
        &env(&[("WAGATE_LIMITS__MAX_BODY_BYTES", "2048")]),
    )
    .expect("loads");
    assert_eq!(config.limits.max_in_flight, 7);
    assert_eq!(config.limits.max_body_bytes, 2048);
}

#[test]
fn load_of_a_missing_file_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let err = Config::load(Some(&path), &no_env()).expect_err("missing file");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn empty_text_is_the_defaults() {
    assert_eq!(parse("").expect("empty parses"), Config::default());
    assert_eq!(
        parse("# only a comment\n").expect("comment parses"),
        Config::default()
    );
}

#[test]
fn defaults_are_the_documented_values() {
    let c = Config::default();
    assert_eq!(
        c.listen.proxy,
        "0.0.0.0:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        c.listen.admin,
        "127.0.0.1:9090".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        c.upstream.base_url.to_string(),
        "https://graph.facebook.com"
    );
    assert_eq!(c.upstream.uri().to_string(), "https://graph.facebook.com/");
    assert!(c.upstream.base_url.is_https());
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.upstream.timeout, Duration::from_secs(60));
    assert_eq!(c.upstream.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(c.upstream.pool_max_idle, 256);
    assert_eq!(c.limits.max_body_bytes, 100 * 1024 * 1024);
    assert_eq!(c.limits.max_in_flight, 10_000);
    assert_eq!(c.limits.inspect_body_bytes, 64 * 1024);
    assert_eq!(c.server.worker_threads, 0);
    assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(30));
    assert_eq!(c.log.format, LogFormat::Pretty);
    assert_eq!(c.log.level, "info");
    assert!(c.store.redis_url.is_empty());
    assert!(c.store.redis_url.urls().is_empty());
    assert_eq!(c.store.path, std::path::PathBuf::from("wagate-breakers.db"));
    assert!(c.admin.token.is_empty());
    assert_eq!(c.webhook.path, "/webhooks/whatsapp");
    assert!(c.webhook.app_secret.is_empty());
    assert!(c.webhook.verify_token.is_empty());
    assert!(c.webhook.forward_url.is_empty());
    assert!(c.health.access_token.is_empty());
    // The defaults pass their own validation.
    assert_eq!(Config::default().validate().expect("defaults valid"), c);
}

/// Each (config text, key the error must name).
const REJECTED: &[(&str, &str)] = &[
    (
        "[upstream]\nbase_url = \"ftp://graph.example\"",
        "upstream.base_url",
    ),
    (
        "[upstream]\nbase_url = \"graph.facebook.com\"",
        "upstream.base_url",
    ),
    (
        "[upstream]\nbase_url = \"https://graph.facebook.com/v21.0\"",
        "upstream.base_url",
    ),
    (
        "[upstream]\nbase_url = \"https://graph.facebook.com/?x=1\"",
        "upstream.base_url",
    ),
    (
        "[upstream]\nbase_url = \"https://u:p@graph.facebook.com\"",
        "upstream.base_url",
    ),
    ("[upstream]\nbase_url = \"not a url\"", "upstream.base_url"),
    ("[upstream]\ntimeout = \"0s\"", "upstream.timeout"),
    (
        "[upstream]\nconnect_timeout = \"0ms\"",
        "upstream.connect_timeout",
    ),
    ("[upstream]\ntimeout = \"5 parsecs\"", "upstream.timeout"),
    ("[upstream]\ntimeout = 30", "upstream.timeout"),
    ("[upstream]\npool_max_idle = -1", "upstream.pool_max_idle"),
    ("[server]\ndrain_timeout = \"0s\"", "server.drain_timeout"),
    (
        "[server]\nheader_read_timeout = \"0s\"",
        "server.header_read_timeout",
    ),
    ("[limits]\nmax_in_flight = 0", "limits.max_in_flight"),
    ("[limits]\nmax_body_bytes = 0", "limits.max_body_bytes"),
    (
        "[limits]\ninspect_body_bytes = 1023",
        "limits.inspect_body_bytes",
    ),
    (
        "[limits]\ninspect_body_bytes = 1048577",
        "limits.inspect_body_bytes",
    ),
    ("[limits]\nmax_in_flight = \"many\"", "limits.max_in_flight"),
    ("[log]\nlevel = \"wagate=[\"", "log.level"),
    ("[log]\nformat = \"xml\"", "log.format"),
    ("[listen]\nproxy = \"localhost\"", "listen.proxy"),
    ("[listen]\nadmin = \"0.0.0.0:8080\"", "listen.admin"),
    (
        "[store]\nredis_url = \"http://cache:6379\"",
        "store.redis_url",
    ),
    ("[store]\nredis_url = \"cache:6379\"", "store.redis_url"),
    ("[store]\nredis_url = \"redis://\"", "store.redis_url"),
    (
        "[store]\nredis_url = \"redis://a:6379,,redis://b:6379\"",
        "store.redis_url",
    ),
    (
        "[store]\nredis_url = \"redis://a:6379,memcache://b:11211\"",
        "store.redis_url",
    ),
    (
        "[store]\nredis_url = \"redis://cache:6379/zero\"",
        "store.redis_url",
    ),
    ("[store]\npath = \"\"", "store.path"),
    (
        "[store]\nredis_url = \"redis+sentinel://s1:26379\"",
        "store.redis_url",
    ),
    (
        "[store]\nredis_url = \"redis+sentinel://s1:26379/m/x\"",
        "store.redis_url",
    ),
    (
        "[store]\nredis_url = \"redis+sentinel://s1:26379/m,redis://r:6379\"",
        "store.redis_url",
    ),
    (
        "[store]\ntls_cert_file = \"client.crt\"",
        "store.tls_key_file",
    ),
    (
        "[store]\nredis_url = \"redis://r:6379\"\nsentinel_password = \"pw\"",
        "store.sentinel_password",
    ),
    (
        "[store]\nsentinel_username = \"watcher\"",
        "store.sentinel_password",
    ),
    ("[webhook]\npath = \"/\"", "webhook.path"),
    ("[webhook]\npath = \"webhooks\"", "webhook.path"),
    ("[webhook]\npath = \"/hook?x=1\"", "webhook.path"),
    (
        "[webhook]\nforward_url = \"ftp://app.example/hook\"",
        "webhook.forward_url",
    ),
    ("[webhook]\nforward_url = \"/hook\"", "webhook.forward_url"),
    (
        "[webhook]\nforward_url = \"https://u:p@app.example/hook\"",
        "webhook.forward_url",
    ),
    ("[admin]\ntoken = 12345", "admin.token"),
    ("[admin]\ntokens = \"alice\"", "admin.tokens"),
    ("[admin]\ntokens = \"alice:\"", "admin.tokens"),
    ("[admin]\ntokens = \"a b:x\"", "admin.tokens"),
    ("[admin]\ntokens = \"a:x,a:y\"", "admin.tokens"),
    (
        "[admin]\ntoken = \"t\"\ntokens = \"admin:x\"",
        "admin.tokens",
    ),
];

#[test]
fn sentinel_urls_name_a_master_and_an_optional_database() {
    let c = parse(
        "[store]\nredis_url = \"redis+sentinel://app:pw@s1:26379/main/2, redis+sentinel://s2:26379/main\"",
    )
    .unwrap();
    assert_eq!(c.store.redis_url.urls().len(), 2);
    assert!(!c.store.redis_url.redacted().contains("pw"));
}

#[test]
fn admin_token_is_trimmed_like_a_presented_token() {
    let c = parse("[admin]\ntoken = \"t0\\n\"").unwrap();
    assert_eq!(
        c.admin.named_tokens(),
        [("admin".to_owned(), "t0".to_owned())]
    );
}

#[test]
fn admin_tokens_are_named_and_admin_token_is_admin() {
    let c = parse("[admin]\ntoken = \"t0\"\ntokens = \"alice:t1, deploy-bot:t2\"").unwrap();
    let names: Vec<(String, String)> = c.admin.named_tokens();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [("admin", "t0"), ("alice", "t1"), ("deploy-bot", "t2")]
    );
    // A rejected entry is named by position, never by its token.
    let err = parse("[admin]\ntokens = \"alice:s3cr3t,bob\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("entry 2") && !err.contains("s3cr3t"), "{err}");
}

#[test]
fn each_rejection_names_its_key() {
    for (text, key) in REJECTED {
        let err = parse(text).expect_err(text);
        assert_eq!(err.key(), Some(*key), "{text:?} gave {err}");
        assert!(
            err.to_string().starts_with(&format!("{key}: ")),
            "{text:?} gave {err}"
        );
    }
}

#[test]
fn boundary_and_alternative_values_are_accepted() {
    for text in [
        "[limits]\ninspect_body_bytes = 1024\nmax_in_flight = 1\nmax_body_bytes = 1",
        "[limits]\ninspect_body_bytes = 1048576",
        "[upstream]\nbase_url = \"http://127.0.0.1:8081/\"",
        "[store]\nredis_url = \"redis://cache:6379/2\"",
        "[store]\nredis_url = \"rediss://:pw@a:6380, redis://b:6379 ,redis://c\"",
        "[webhook]\npath = \"/wa\"\napp_secret = \"s\"\nforward_url = \"https://app.example/hooks/wa?src=wagate\"",
        "[webhook]\ninsecure_skip_signature = true\nmirror_urls = \"http://a/1, https://b/2\"",
        "[log]\nlevel = \"wagate=debug,hyper=warn,info\"\nformat = \"json\"",
        "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"",
    ] {
        parse(text).unwrap_or_else(|e| panic!("{text:?} rejected: {e}"));
    }
}

#[test]
fn upstream_uri_is_scheme_and_authority() {
    let c = parse("[upstream]\nbase_url = \"http://127.0.0.1:8081\"").expect("parses");
    assert_eq!(c.upstream.uri().to_string(), "http://127.0.0.1:8081/");
    assert_eq!(c.upstream.base_url.authority().as_str(), "127.0.0.1:8081");
    assert_eq!(c.upstream.base_url.scheme().as_str(), "http");
    assert!(!c.upstream.base_url.is_https());
}

#[test]
fn unknown_key_is_rejected_naming_key_and_section() {
    let err = parse("[upstream]\ntimeout = \"5s\"\nretries = 3").expect_err("unknown key");
    let text = err.to_string();
    assert!(
        text.starts_with("upstream.retries: unknown key `retries`"),
        "{text}"
    );
}

#[test]
fn unknown_section_is_rejected_naming_it() {
    let err = parse("[upstreams]\ntimeout = \"5s\"").expect_err("unknown section");
    assert!(
        err.to_string()
            .starts_with("upstreams: unknown section `upstreams`"),
        "{err}"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err = parse("[log]\nformat = \"json\"\nlevel = info\n").expect_err("bad toml");
    match &err {
        ConfigError::Syntax { line, column, .. } => assert_eq!((*line, *column), (3, 9), "{err}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("invalid toml at line 3, column 9: "),
        "{err}"
    );
}

#[test]
fn durations_take_units() {
    let c = parse("[upstream]\ntimeout = \"250ms\"\nconnect_timeout = \"30s\"\npool_idle_timeout = \"5m\"\n[server]\ndrain_timeout = \"1h 30m\"")
        .expect("durations parse");
    assert_eq!(c.upstream.timeout, Duration::from_millis(250));
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(30));
    assert_eq!(c.upstream.pool_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(5400));
    let err = parse("[upstream]\ntimeout = 30").expect_err("bare number");
    assert!(err.to_string().contains("\"30s\""), "{err}");
}

#[test]
fn rules_and_breaker_settings_come_from_the_file() {
    let config = parse(
        "[breaker]\nmin_open = \"10m\"\n\n[[rules]]\ncodes = 131048\naction = \"cooldown\"\nscope = \"number\"\ncooldown = \"1h\"\n\n[[rules]]\ncodes = \"200-299\"\naction = \"pass\"\n",
    )
    .expect("valid rules");
    assert_eq!(config.breaker.min_open, std::time::Duration::from_secs(600));
    assert_eq!(config.rules.len(), 2);
    let rules = crate::breaker::Rules::with_overrides(config.rules).unwrap();
    assert_eq!(
        rules.classify(131048).cooldown,
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(rules.classify(250).action, crate::breaker::Action::Pass);
}

#[test]
fn invalid_rules_and_breaker_settings_name_their_key() {
    let bad_rule = parse("[[rules]]\ncodes = 131048\naction = \"cooldown\"\n").unwrap_err();
    assert!(bad_rule.to_string().starts_with("rules"), "{bad_rule}");
    let bad_setting = parse("[breaker]\njitter = 3.0\n").unwrap_err();
    assert!(
        bad_setting.to_string().contains("breaker.jitter"),
        "{bad_setting}"
    );
}

#[test]
fn event_rules_and_wabas_are_read_and_checked() {
    let c = parse(
        "[[event_rules]]\nevent = \"account_update/DISABLED_UPDATE/SCHEDULE_FOR_DISABLE\"\naction = \"trip\"\ncode = 131031\n\n[[wabas]]\nid = \"100000000000001\"\nnumbers = [\"200000000000001\"]",
    )
    .expect("valid");
    assert_eq!(c.event_rules.len(), 1);
    assert_eq!(c.wabas[0].numbers, ["200000000000001"]);
    let err =
        parse("[[event_rules]]\nevent = \"security/PIN_CHANGED\"\naction = \"trip\"").unwrap_err();
    assert!(err.to_string().contains("event_rules"), "{err}");
    let err = parse("[[wabas]]\nid = \"\"").unwrap_err();
    assert!(err.to_string().contains("wabas[0].id"), "{err}");
    let err = parse("[[wabas]]\nid = \"1\"\nnumbers = [\"{x}\"]").unwrap_err();
    assert!(err.to_string().contains("wabas[0].numbers"), "{err}");
}
