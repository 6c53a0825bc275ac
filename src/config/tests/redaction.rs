//! Secrets and Redis passwords never show in `Debug`, the redacted TOML or
//! error messages.

use super::{env, parse};
use crate::config::{BaseUrl, Config, RedisUrl};

#[test]
fn secrets_never_show_in_debug_or_redacted_toml() {
    let c = Config::from_toml_str(
        "[admin]\ntoken = \"tok-ADMIN-4242\"\ntokens = \"alice:tok-ALICE-3131\"\n[webhook]\napp_secret = \"sec-APP-1717,sec-APP-2828\"\n",
        &env(&[
            ("WAGATE_WEBHOOK__VERIFY_TOKEN", "tok-VERIFY-5151"),
            ("WAGATE_HEALTH__ACCESS_TOKEN", "EAAG-HEALTH-6363"),
            ("WAGATE_STORE__REDIS_URL", "redis://default:pw-REDIS-9393@cache.internal:6379/0"),
        ]),
    )
    .expect("parses");
    assert_eq!(c.admin.token.expose(), "tok-ADMIN-4242");
    assert_eq!(c.health.access_token.expose(), "EAAG-HEALTH-6363");
    let shown = [format!("{c:?}"), format!("{c:#?}"), c.to_redacted_toml()];
    for text in &shown {
        for secret in [
            "ADMIN-4242",
            "ALICE-3131",
            "APP-1717",
            "APP-2828",
            "VERIFY-5151",
            "HEALTH-6363",
            "REDIS-9393",
        ] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
        assert!(text.contains("<redacted>"), "{text}");
        assert!(
            text.contains("cache.internal:6379"),
            "redis host hidden in:\n{text}"
        );
    }
    let redacted = c.to_redacted_toml();
    assert!(redacted.contains("token = \"<redacted>\""), "{redacted}");
    assert!(
        redacted.contains("redis_url = \"redis://default:<redacted>@cache.internal:6379/0\""),
        "{redacted}"
    );
}

#[test]
fn redis_urls_hide_passwords_but_show_hosts() {
    for (url, shown) in [
        (
            "redis://:hunter2@cache:6379",
            "redis://:<redacted>@cache:6379",
        ),
        (
            "rediss://app:hunter2@cache:6380/1",
            "rediss://app:<redacted>@cache:6380/1",
        ),
        (
            "redis://hunter2@cache:6379",
            "redis://<redacted>@cache:6379",
        ),
        (
            "redis://:hun/ter@2@cache:6379",
            "redis://:<redacted>@cache:6379",
        ),
        ("redis://cache:6379", "redis://cache:6379"),
        (
            "redis://:hunter2@a:7000, redis://:hunter2@b:7001",
            "redis://:<redacted>@a:7000,redis://:<redacted>@b:7001",
        ),
    ] {
        let value = RedisUrl::new(url);
        assert_eq!(value.redacted(), shown);
        assert_eq!(value.to_string(), shown);
        assert!(!format!("{value:?}").contains("hunter2"));
    }
    let cluster = RedisUrl::new("redis://a:7000, redis://b:7001");
    assert!(cluster.is_cluster());
    assert_eq!(cluster.urls(), ["redis://a:7000", "redis://b:7001"]);
}

#[test]
fn rejected_redis_url_error_hides_the_password() {
    let err = Config::from_toml_str(
        "",
        &env(&[("WAGATE_STORE__REDIS_URL", "http://:hunter2@cache:6379")]),
    )
    .expect_err("bad scheme");
    let text = err.to_string();
    assert!(text.starts_with("store.redis_url: "), "{text}");
    assert!(
        text.contains("cache:6379") && !text.contains("hunter2"),
        "{text}"
    );
}

#[test]
fn redacted_toml_without_secrets_loads_back_unchanged() {
    let c = parse("[upstream]\ntimeout = \"90s\"\n[limits]\nmax_in_flight = 5\n[store]\nredis_url = \"redis://a:1,redis://b:2\"")
        .expect("parses");
    let again = parse(&c.to_redacted_toml()).expect("redacted toml parses");
    assert_eq!(again, c);
}

#[test]
fn base_url_errors_never_quote_the_url() {
    for url in [
        "https://user:hunter2@graph.facebook.com",
        "ftp://:hunter2@graph.facebook.com",
        "https://graph.facebook.com/hunter2",
    ] {
        let err = url.parse::<BaseUrl>().expect_err(url).to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn a_comma_in_a_password_stays_in_its_url_and_hidden() {
    let url = RedisUrl::new("redis://app:pw,half-9911@cache:6379/0,redis://b:6379");
    assert_eq!(
        url.urls(),
        ["redis://app:pw,half-9911@cache:6379/0", "redis://b:6379"]
    );
    let shown = url.redacted();
    assert!(
        !shown.contains("half-9911") && !shown.contains("pw,"),
        "{shown}"
    );
}

#[test]
fn the_sentinels_password_never_shows() {
    let c = Config::from_toml_str(
        "[store]\nredis_url = \"redis+sentinel://s1:26379/main\"\nsentinel_username = \"watcher\"\n",
        &env(&[("WAGATE_STORE__SENTINEL_PASSWORD", "pw-SENTINEL-8484")]),
    )
    .expect("parses");
    assert_eq!(c.store.sentinel_password.expose(), "pw-SENTINEL-8484");
    for text in [format!("{c:?}"), c.to_redacted_toml()] {
        assert!(!text.contains("SENTINEL-8484"), "{text}");
        assert!(text.contains("watcher"), "{text}");
    }
}
