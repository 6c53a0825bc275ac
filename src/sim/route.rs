//! Graph paths, parsed by hand because the version segment is optional
//! (`/v23.0/{id}/messages` and `/{id}/messages` are the same call), which
//! axum's router cannot express without duplicating every route.

use axum::http::Method;

use super::state::Kind;

/// What a Graph path asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Send(Kind),
    Media,
    Registration,
    SetPin,
    Health(String),
    Info,
    Unsupported,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route<'a> {
    /// The object segment, quoted in "unsupported request" errors.
    pub(crate) object: &'a str,
    /// The object segment when it is an id; only ids get counters.
    pub(crate) id: Option<&'a str>,
    pub(crate) action: Action,
}

/// `^v\d+\.\d+$`
fn is_version(seg: &str) -> bool {
    let Some(rest) = seg.strip_prefix('v') else {
        return false;
    };
    match rest.split_once('.') {
        Some((major, minor)) => is_id(major) && is_id(minor),
        None => false,
    }
}

pub(crate) fn is_id(seg: &str) -> bool {
    !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())
}

impl<'a> Route<'a> {
    pub(crate) fn parse(method: &Method, path: &'a str, query: &str) -> Self {
        let mut segs = path.strip_prefix('/').unwrap_or(path).split('/');
        let mut object = segs.next().unwrap_or("");
        if is_version(object) {
            object = segs.next().unwrap_or("");
        }
        let edge = segs.next();
        let id = is_id(object).then_some(object);
        let action = match (id, segs.next(), edge) {
            (None, _, _) | (_, Some(_), _) => Action::Unsupported,
            (Some(_), None, edge) => Self::action(method, edge, query),
        };
        Self { object, id, action }
    }

    fn action(method: &Method, edge: Option<&str>, query: &str) -> Action {
        match (method, edge) {
            (&Method::POST, Some("messages")) => Action::Send(Kind::Messages),
            (&Method::POST, Some("marketing_messages")) => Action::Send(Kind::MarketingMessages),
            (&Method::POST, Some("media")) => Action::Media,
            (&Method::POST, Some("register" | "deregister" | "request_code" | "verify_code")) => {
                Action::Registration
            }
            (&Method::POST, None) => Action::SetPin,
            (&Method::GET, None) => match query_param(query, "fields") {
                Some(f) if f.split(',').any(|x| x.trim() == "health_status") => Action::Health(f),
                _ => Action::Info,
            },
            _ => Action::Unsupported,
        }
    }
}

impl Action {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Action::Send(kind) => *kind,
            Action::Media => Kind::Media,
            Action::Health(_) => Kind::Health,
            Action::Registration | Action::SetPin => Kind::Registration,
            Action::Info | Action::Unsupported => Kind::Other,
        }
    }
}

/// The first value of `key` in a query string, percent-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let pair = bytes
                    .get(i + 1..i + 3)
                    .and_then(|p| Some((hex(p[0])?, hex(p[1])?)));
                if let Some((high, low)) = pair {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(method: Method, path: &str, query: &str) -> Action {
        Route::parse(&method, path, query).action
    }

    #[test]
    fn version_segment_is_optional_and_opaque() {
        for path in ["/v23.0/123/messages", "/123/messages", "/v1.5/123/messages"] {
            let r = Route::parse(&Method::POST, path, "");
            assert_eq!(r.id, Some("123"), "{path}");
            assert_eq!(r.action, Action::Send(Kind::Messages), "{path}");
        }
        assert_eq!(
            action(Method::POST, "/v23/123/messages", ""),
            Action::Unsupported
        );
        assert_eq!(
            action(Method::POST, "/vx.0/123/messages", ""),
            Action::Unsupported
        );
    }

    #[test]
    fn routes_map_to_actions() {
        assert_eq!(
            action(Method::POST, "/1/marketing_messages", ""),
            Action::Send(Kind::MarketingMessages)
        );
        assert_eq!(action(Method::POST, "/v23.0/1/media", ""), Action::Media);
        for edge in ["register", "deregister", "request_code", "verify_code"] {
            assert_eq!(
                action(Method::POST, &format!("/1/{edge}"), ""),
                Action::Registration
            );
        }
        assert_eq!(action(Method::POST, "/v23.0/1", ""), Action::SetPin);
        assert_eq!(
            action(Method::GET, "/1", "fields=status%2Chealth_status"),
            Action::Health("status,health_status".into())
        );
        assert_eq!(action(Method::GET, "/1", "fields=status"), Action::Info);
        assert_eq!(action(Method::GET, "/1", ""), Action::Info);
        assert_eq!(action(Method::GET, "/1/messages", ""), Action::Unsupported);
        assert_eq!(
            action(Method::POST, "/1/messages/extra", ""),
            Action::Unsupported
        );
        let r = Route::parse(&Method::POST, "/abc/messages", "");
        assert_eq!(
            (r.id, r.object, r.action),
            (None, "abc", Action::Unsupported)
        );
    }

    #[test]
    fn percent_decoding_handles_edges() {
        assert_eq!(percent_decode("a%2Cb+c"), "a,b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(
            query_param("x=1&fields=health_status", "fields").as_deref(),
            Some("health_status")
        );
        assert_eq!(query_param("fields", "fields").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "fields"), None);
    }
}
