//! Route classification: which Graph API calls are sends, which must always
//! pass, and which phone number they concern.
//!
//! Pure functions over the method and path, so they are tested with plain
//! values and cost a few dozen nanoseconds on the hot path. The request body
//! is never read here: telling a mark-as-read from a send needs the body, so
//! that is a separate function ([`is_mark_as_read`]) the gate calls only when
//! a number's breaker is not closed.

use std::ops::Range;

use http::Method;

/// What kind of Graph API call a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `POST /{version}/{phone_number_id}/messages` or `/marketing_messages`.
    /// Mark-as-read calls share this path; see [`is_mark_as_read`].
    Send,
    /// Registration and two-step PIN endpoints: the recovery path of a locked
    /// number, so they always pass.
    Registration,
    /// `GET /{version}/{node_id}?fields=...health_status...`.
    Health,
    /// Everything else (media, templates, management): forwarded untouched.
    Other,
}

impl RouteKind {
    /// Every kind, for pre-registering metric label values.
    pub const ALL: [RouteKind; 4] = [Self::Send, Self::Registration, Self::Health, Self::Other];

    /// The metric label and log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Registration => "registration",
            Self::Health => "health",
            Self::Other => "other",
        }
    }

    /// Position in [`RouteKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A classified request: its kind and where the phone number id sits in the
/// path (a range, so classification allocates nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The kind of call.
    pub kind: RouteKind,
    number: Option<Range<usize>>,
}

impl Route {
    /// The phone number id (or node id, for health reads) in `path`, which
    /// must be the path this route was classified from.
    pub fn number<'a>(&self, path: &'a str) -> Option<&'a str> {
        self.number.clone().map(|r| &path[r])
    }

    fn other() -> Self {
        Self {
            kind: RouteKind::Other,
            number: None,
        }
    }
}

/// Classifies a request by method, path and query.
///
/// The version segment is optional and opaque (`v23.0`, `v24.0`, …): Meta
/// falls back to the app's default version when it is missing. Ids are
/// digit strings; anything else is [`RouteKind::Other`].
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Route {
    let mut segments = Segments::new(path);
    let Some(first) = segments.next() else {
        return Route::other();
    };
    let node = if crate::graph::is_version(&path[first.clone()]) {
        match segments.next() {
            Some(node) => node,
            None => return Route::other(),
        }
    } else {
        first
    };
    if !is_id(&path[node.clone()]) {
        return Route::other();
    }
    let edge = segments.next();
    if segments.next().is_some() {
        return Route::other();
    }
    let kind = match (method, edge.map(|e| &path[e])) {
        (&Method::POST, Some("messages" | "marketing_messages")) => RouteKind::Send,
        (&Method::POST, Some("register" | "deregister" | "request_code" | "verify_code")) => {
            RouteKind::Registration
        }
        // `POST /{phone_number_id}` sets the two-step PIN. Any POST to the
        // bare node passes, which also covers profile-style updates: a PIN
        // change must never be held back, and the body is not read here.
        (&Method::POST, None) => RouteKind::Registration,
        (&Method::GET, None) if query.is_some_and(asks_health_status) => RouteKind::Health,
        _ => return Route::other(),
    };
    Route {
        kind,
        number: Some(node),
    }
}

/// Whether a send body is a mark-as-read (or typing indicator) call:
/// `{"messaging_product":"whatsapp","status":"read","message_id":"wamid…"}`.
/// These are not sends and carry no integrity risk, so they pass an open
/// breaker. A body that is not JSON is not a mark-as-read.
pub fn is_mark_as_read(body: &[u8]) -> bool {
    // Most refused bodies are sends: skip the parse when "read" is absent.
    if find(body, b"read").is_none() {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        status: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Probe<'_>>(body).is_ok_and(|p| p.status.as_deref() == Some("read"))
}

/// The recipient (`"to"`) of a send body, or of its first bytes.
///
/// A scan rather than a JSON parse, because after a 131056 only the first
/// frame of the request body is at hand and it may end mid-document. Meta's
/// send bodies put `to` near the top; a body without it, or with an escaped
/// value, has no recipient here and only the number-level rules apply.
pub fn send_recipient(body: &[u8]) -> Option<&str> {
    let mut rest = body;
    while let Some(at) = find(rest, b"\"to\"") {
        let after = trim_start(&rest[at + 4..]);
        if let Some(after) = after.strip_prefix(b":") {
            let after = trim_start(after);
            if let Some(value) = after.strip_prefix(b"\"") {
                let end = value.iter().position(|&b| b == b'"' || b == b'\\')?;
                if value.get(end) != Some(&b'"') || end == 0 {
                    return None;
                }
                return std::str::from_utf8(&value[..end]).ok();
            }
        }
        rest = &rest[at + 4..];
    }
    None
}

/// Whether a send body is a template message (top-level `"type":
/// "template"`): a business-initiated send, the traffic class a
/// `RESTRICTED_BIZ_INITIATED_MESSAGING` restriction stops. Parsed, not
/// scanned: `type` also appears inside a template's components. A body
/// that is not JSON is not a template (Meta refuses it anyway).
pub fn is_template(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Kind<'_>>(body).is_ok_and(|k| k.kind.as_deref() == Some("template"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

fn is_id(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

fn asks_health_status(query: &str) -> bool {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("fields="))
        .flat_map(|fields| fields.split(','))
        .flat_map(|field| field.split("%2C"))
        .flat_map(|field| field.split("%2c"))
        .any(|field| field == "health_status")
}

/// Non-empty path segments as byte ranges.
struct Segments<'a> {
    path: &'a str,
    pos: usize,
}

impl<'a> Segments<'a> {
    fn new(path: &'a str) -> Self {
        Self { path, pos: 0 }
    }
}

impl Iterator for Segments<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let bytes = self.path.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos] == b'/' {
            self.pos += 1;
        }
        if self.pos >= bytes.len() {
            return None;
        }
        let start = self.pos;
        while self.pos < bytes.len() && bytes[self.pos] != b'/' {
            self.pos += 1;
        }
        Some(start..self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_told_by_its_top_level_type() {
        assert!(is_template(
            br#"{"messaging_product":"whatsapp","to":"1","type":"template","template":{"name":"x","components":[{"type":"body"}]}}"#
        ));
        assert!(!is_template(
            br#"{"to":"1","type":"interactive","interactive":{"type":"template"}}"#
        ));
        assert!(!is_template(
            br#"{"to":"1","type":"text","text":{"body":"template"}}"#
        ));
        assert!(!is_template(b"not json"));
        assert!(!is_template(br#"{"to":"1"}"#));
    }

    fn kind_and_number(method: Method, target: &str) -> (RouteKind, Option<String>) {
        let (path, query) = target
            .split_once('?')
            .map_or((target, None), |(p, q)| (p, Some(q)));
        let route = classify(&method, path, query);
        (route.kind, route.number(path).map(str::to_owned))
    }

    #[test]
    fn classifies_the_graph_api_surface() {
        let id = Some("200000000000001".to_owned());
        let cases = [
            (
                Method::POST,
                "/v23.0/200000000000001/messages",
                RouteKind::Send,
                id.clone(),
            ),
            (
                Method::POST,
                "/200000000000001/messages",
                RouteKind::Send,
                id.clone(),
            ),
            (
                Method::POST,
                "/v25.0/200000000000001/marketing_messages",
                RouteKind::Send,
                id.clone(),
            ),
            (
                Method::POST,
                "/v24.0/200000000000001/messages/",
                RouteKind::Send,
                id.clone(),
            ),
            (
                Method::POST,
                "/v24.0/200000000000001/register",
                RouteKind::Registration,
                id.clone(),
            ),
            (
                Method::POST,
                "/200000000000001/deregister",
                RouteKind::Registration,
                id.clone(),
            ),
            (
                Method::POST,
                "/v24.0/200000000000001/request_code",
                RouteKind::Registration,
                id.clone(),
            ),
            (
                Method::POST,
                "/v24.0/200000000000001/verify_code",
                RouteKind::Registration,
                id.clone(),
            ),
            (
                Method::POST,
                "/v24.0/200000000000001",
                RouteKind::Registration,
                id.clone(),
            ),
            (
                Method::GET,
                "/v24.0/200000000000001?fields=health_status",
                RouteKind::Health,
                id.clone(),
            ),
            (
                Method::GET,
                "/200000000000001?fields=status,health_status",
                RouteKind::Health,
                id.clone(),
            ),
            (
                Method::GET,
                "/v24.0/200000000000001?fields=status%2Chealth_status",
                RouteKind::Health,
                id.clone(),
            ),
            (
                Method::GET,
                "/v24.0/200000000000001?fields=quality_rating",
                RouteKind::Other,
                None,
            ),
            (
                Method::GET,
                "/v24.0/200000000000001",
                RouteKind::Other,
                None,
            ),
            (
                Method::GET,
                "/v24.0/200000000000001/messages",
                RouteKind::Other,
                None,
            ),
            (
                Method::POST,
                "/v24.0/200000000000001/media",
                RouteKind::Other,
                None,
            ),
            (
                Method::DELETE,
                "/v24.0/300000000000009",
                RouteKind::Other,
                None,
            ),
            (Method::POST, "/v24.0/me/messages", RouteKind::Other, None),
            (
                Method::POST,
                "/v24.0/20000x/messages",
                RouteKind::Other,
                None,
            ),
            (
                Method::POST,
                "/v24.0/200000000000001/messages/extra",
                RouteKind::Other,
                None,
            ),
            (
                Method::POST,
                "/v24/200000000000001/messages",
                RouteKind::Other,
                None,
            ),
            (Method::POST, "/", RouteKind::Other, None),
            (Method::POST, "", RouteKind::Other, None),
            (Method::POST, "/v24.0", RouteKind::Other, None),
            (
                Method::PUT,
                "/v24.0/200000000000001/messages",
                RouteKind::Other,
                None,
            ),
        ];
        for (method, target, kind, number) in cases {
            assert_eq!(
                kind_and_number(method.clone(), target),
                (kind, number),
                "{method} {target}"
            );
        }
    }

    #[test]
    fn tells_mark_as_read_from_a_send() {
        assert!(is_mark_as_read(
            br#"{"messaging_product":"whatsapp","status":"read","message_id":"wamid.X"}"#
        ));
        assert!(is_mark_as_read(
            br#"{"messaging_product":"whatsapp","status":"read","message_id":"wamid.X","typing_indicator":{"type":"text"}}"#
        ));
        assert!(!is_mark_as_read(
            br#"{"messaging_product":"whatsapp","to":"15550009999","type":"text","text":{"body":"hi"}}"#
        ));
        assert!(!is_mark_as_read(br#"{"status":"sent"}"#));
        assert!(!is_mark_as_read(b"status=read"));
        assert!(!is_mark_as_read(b""));
    }

    #[test]
    fn finds_the_recipient_of_a_send() {
        let body = br#"{"messaging_product":"whatsapp","to" : "+15550009999","type":"text"}"#;
        assert_eq!(send_recipient(body), Some("+15550009999"));
        let cut = br#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"15550009999","text":{"bo"#;
        assert_eq!(send_recipient(cut), Some("15550009999"));
        let nested = br#"{"text":{"body":"say \"to\" me"},"to":"1555"}"#;
        assert_eq!(send_recipient(nested), Some("1555"));
        assert_eq!(
            send_recipient(br#"{"status":"read","message_id":"wamid.X"}"#),
            None
        );
        assert_eq!(send_recipient(br#"{"to":"155"#), None);
        assert_eq!(send_recipient(br#"{"to":""}"#), None);
        assert_eq!(send_recipient(b""), None);
    }

    #[test]
    fn route_kinds_index_their_table() {
        for (i, kind) in RouteKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
