use super::*;

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
