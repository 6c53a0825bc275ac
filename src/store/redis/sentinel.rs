//! `redis+sentinel://` URLs: a group of Redis Sentinels and the name of the
//! master they watch, `redis+sentinel://[user:password@]host:port/<master>[/<db>]`,
//! one URL per Sentinel, comma-separated. The user and password are the
//! master's; the Sentinels' own (`store.sentinel_username`,
//! `store.sentinel_password`) come apart, as [`SentinelAuth`].

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{IntoConnectionInfo, TlsCertificates};

use super::SentinelAuth;
use crate::store::StoreError;

const SCHEME: &str = "redis+sentinel://";

/// Whether `url` names a Sentinel.
pub(crate) fn is_sentinel(url: &str) -> bool {
    url.get(..SCHEME.len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
}

/// One Sentinel URL's parts: its address, the master's name, and the
/// master's credentials and database as a `redis://` URL.
struct Parts {
    sentinel: String,
    master: String,
    node: String,
}

/// Why `url` is not a Sentinel URL, if it is not: the reason, never quoting
/// the URL (it may carry a password).
pub(crate) fn check(url: &str) -> Result<(), &'static str> {
    split(url).map(|_| ())
}

/// (user info, host, master, database) of a Sentinel URL.
fn split(url: &str) -> Result<(Option<&str>, &str, &str, &str), &'static str> {
    if !is_sentinel(url) {
        return Err("every URL must name a Sentinel when one does");
    }
    let rest = &url[SCHEME.len()..];
    let (authority, path) = rest.split_once('/').ok_or("no master name")?;
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err("no host");
    }
    let mut segments = path.split('/');
    let master = segments.next().unwrap_or_default();
    if master.is_empty() {
        return Err("no master name");
    }
    let db = segments.next().unwrap_or("0");
    if segments.next().is_some() || db.is_empty() || !db.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the path is /<master> or /<master>/<db>");
    }
    Ok((userinfo, host, master, db))
}

fn parts(url: &str, position: usize) -> Result<Parts, StoreError> {
    let (userinfo, host, master, db) = split(url).map_err(|reason| {
        StoreError::Config(format!(
            "redis URL #{position} must be redis+sentinel://[user:password@]host:port/<master>[/<db>]: {reason}"
        ))
    })?;
    let credentials = userinfo.map_or_else(String::new, |u| format!("{u}@"));
    Ok(Parts {
        sentinel: format!("redis://{host}"),
        master: master.to_owned(),
        node: format!("redis://{credentials}master.invalid/{db}"),
    })
}

/// The Sentinel client for `urls`. The master is reached over TLS when `tls`
/// is set (`store.tls_ca_file`); the Sentinels are asked with `auth`.
pub(super) fn client(
    urls: &[String],
    tls: Option<&TlsCertificates>,
    auth: Option<&SentinelAuth>,
) -> Result<SentinelClient, StoreError> {
    let all: Vec<Parts> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| parts(url, i + 1))
        .collect::<Result<_, _>>()?;
    let first = &all[0];
    if all
        .iter()
        .any(|p| p.master != first.master || p.node != first.node)
    {
        return Err(StoreError::Config(
            "every redis+sentinel:// URL must name the same master, credentials and database"
                .to_owned(),
        ));
    }
    // The URL is only parsed for its credentials and database; it names no
    // reachable host. Errors never quote it: it may carry a password.
    let master = first
        .node
        .as_str()
        .into_connection_info()
        .map_err(|_| {
            StoreError::Config("redis URL #1: unreadable credentials or database".to_owned())
        })?
        .redis_settings()
        .clone();
    let sentinels = all
        .iter()
        .map(|p| {
            p.sentinel
                .as_str()
                .into_connection_info()
                .map(|info| info.addr().clone())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::Redis)?;
    let mut builder =
        SentinelClientBuilder::new(sentinels, first.master.clone(), SentinelServerType::Master)
            .map_err(|e| StoreError::Config(format!("redis sentinel: {e}")))?
            .set_client_to_redis_db(master.db());
    if let Some(user) = master.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = master.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(certs) = tls {
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_redis_certificates(certs.clone());
    }
    if let Some(auth) = auth {
        if !auth.username.is_empty() {
            builder = builder.set_client_to_sentinel_username(&auth.username);
        }
        if !auth.password.is_empty() {
            builder = builder.set_client_to_sentinel_password(auth.password.expose());
        }
    }
    builder
        .build()
        .map_err(|e| StoreError::Config(format!("redis sentinel: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_names_the_master_its_credentials_and_database() {
        let p = parts("redis+sentinel://app:s3cret@10.0.0.5:26379/mymaster/2", 1).unwrap();
        assert_eq!(p.sentinel, "redis://10.0.0.5:26379");
        assert_eq!(p.master, "mymaster");
        assert_eq!(p.node, "redis://app:s3cret@master.invalid/2");
        let p = parts("REDIS+SENTINEL://s1:26379/main", 1).unwrap();
        assert_eq!(
            (p.master.as_str(), p.node.as_str()),
            ("main", "redis://master.invalid/0")
        );
    }

    #[test]
    fn a_bad_sentinel_url_is_refused_without_its_password() {
        for url in [
            "redis+sentinel://u:pw-9@host:26379",
            "redis+sentinel://u:pw-9@host:26379/",
            "redis+sentinel://u:pw-9@/m",
            "redis+sentinel://u:pw-9@host:26379/m/x",
            "redis://u:pw-9@host:6379",
        ] {
            let e = parts(url, 3)
                .err()
                .unwrap_or_else(|| panic!("{url}"))
                .to_string();
            assert!(e.contains("#3") && !e.contains("pw-9"), "{url}: {e}");
        }
        let mixed = [
            "redis+sentinel://a:26379/m".to_owned(),
            "redis+sentinel://b:26379/other".to_owned(),
        ];
        assert!(client(&mixed, None, None).is_err());
    }
}
