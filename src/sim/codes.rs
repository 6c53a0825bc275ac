//! Meta's error codes as the simulator answers them: default HTTP status,
//! title and details per code (reference §3), and the envelope of §2.
//!
//! Titles and details follow the fixtures where one exists, so a test that
//! injects 131031 gets the same `message` and `details` as
//! `error_131031.json`.

use axum::http::StatusCode;
use bytes::Bytes;

use super::answer::{Answer, json_bytes};
use super::{ErrorInjection, ids};
use crate::graph::{Envelope, EnvelopeBody, ErrorData};

/// What the table knows about one code.
struct CodeInfo {
    status: u16,
    title: &'static str,
    details: &'static str,
}

const fn info(status: u16, title: &'static str, details: &'static str) -> CodeInfo {
    CodeInfo {
        status,
        title,
        details,
    }
}

fn lookup(code: i64) -> CodeInfo {
    match code {
        0 => info(401, "AuthException", "Unable to authenticate the app user."),
        1 => info(400, "API Unknown", "An unknown error occurred."),
        2 => info(
            503,
            "API Service",
            "Temporary due to downtime or due to being overloaded.",
        ),
        3 => info(
            500,
            "API Method",
            "The app does not have the capability or permission for this call.",
        ),
        4 => info(
            400,
            "API Too Many Calls",
            "The app has reached its API call rate limit.",
        ),
        10 => info(
            403,
            "Permission Denied",
            "Permission is either not granted or has been removed.",
        ),
        100 => info(
            400,
            "Invalid parameter",
            "The request included invalid or unsupported parameters.",
        ),
        190 => info(
            401,
            "Access token has expired",
            "The access token is invalid or has expired.",
        ),
        200..=299 => info(
            403,
            "API Permission",
            "Permission is either not granted or has been removed.",
        ),
        368 => info(
            403,
            "Temporarily blocked for policies violations",
            "The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy.",
        ),
        80007 => info(
            400,
            "Rate limit issues",
            "The WhatsApp Business Account has reached its rate limit.",
        ),
        130429 => info(
            400,
            "Rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number in a short period of time",
        ),
        130497 => info(
            403,
            "Business account is restricted from messaging users in this country",
            "The business is restricted from sending messages to users in this country.",
        ),
        131000 => info(
            500,
            "Something went wrong",
            "Message failed to send due to an unknown error.",
        ),
        131016 => info(
            500,
            "Service unavailable",
            "A service is temporarily unavailable.",
        ),
        131026 => info(400, "Message Undeliverable", "Unable to deliver message."),
        131031 => info(
            403,
            "Business Account locked",
            "Business account has been locked.",
        ),
        131048 => info(
            400,
            "Spam rate limit hit",
            "Message failed to send because there are restrictions on how many messages can be sent from this phone number. This may be because too many previous messages were blocked or flagged as spam.",
        ),
        131056 => info(
            400,
            "(Business Account, Consumer Account) pair rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        ),
        131057 => info(
            500,
            "Account in maintenance mode",
            "Business Account is in maintenance mode.",
        ),
        133010 => info(
            400,
            "Phone number not registered",
            "Phone number not registered on the WhatsApp Business Platform.",
        ),
        133016 => info(
            400,
            "Account register deregister rate limit exceeded",
            "Registration or Deregistration failed because there were too many attempts for this phone number in a short period of time.",
        ),
        _ => info(
            400,
            "Unknown error",
            "The simulator has no table entry for this code.",
        ),
    }
}

/// The title Meta uses for `code`, as in `(#code) Title` and webhook `errors[].title`.
pub(crate) fn title(code: i64) -> &'static str {
    lookup(code).title
}

/// The `details` text for `code`.
pub(crate) fn details(code: i64) -> &'static str {
    lookup(code).details
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Meta's envelope for `code` with the table's status, title and details.
pub(crate) fn envelope(code: i64) -> Answer {
    let info = lookup(code);
    let body = if code == 190 {
        // Auth errors carry a subcode and no error_data (fixture error_190.json).
        EnvelopeBody {
            message: "Error validating access token: Session has expired.".to_owned(),
            kind: Some("OAuthException".to_owned()),
            code,
            error_subcode: Some(463),
            error_data: None,
            fbtrace_id: Some(ids::fbtrace_id()),
        }
    } else {
        EnvelopeBody {
            message: format!("(#{code}) {}", info.title),
            kind: Some("OAuthException".to_owned()),
            code,
            error_subcode: None,
            error_data: Some(ErrorData {
                messaging_product: Some("whatsapp".to_owned()),
                details: Some(info.details.to_owned()),
            }),
            fbtrace_id: Some(ids::fbtrace_id()),
        }
    };
    Answer::json(status(info.status), &Envelope { error: body })
}

/// The answer for an injected error: its own body verbatim if given, else
/// the table's envelope; its own status if valid, else the table's.
pub(crate) fn injected(injection: &ErrorInjection) -> Answer {
    let table_status = status(lookup(injection.code).status);
    let chosen = injection
        .http_status
        .filter(|s| (200..=599).contains(s))
        .map(status)
        .unwrap_or(table_status);
    match &injection.body {
        Some(body) => Answer {
            status: chosen,
            body: Bytes::copy_from_slice(body.as_bytes()),
        },
        None => Answer {
            status: chosen,
            ..envelope(injection.code)
        },
    }
}

/// Code 100, `(#100) Invalid parameter`, with a details text saying what was wrong.
pub(crate) fn invalid_parameter(details: &str) -> Answer {
    let body = EnvelopeBody {
        message: "(#100) Invalid parameter".to_owned(),
        kind: Some("OAuthException".to_owned()),
        code: 100,
        error_subcode: None,
        error_data: Some(ErrorData {
            messaging_product: Some("whatsapp".to_owned()),
            details: Some(details.to_owned()),
        }),
        fbtrace_id: Some(ids::fbtrace_id()),
    };
    Answer::json(StatusCode::BAD_REQUEST, &Envelope { error: body })
}

/// What Meta answers for an object it does not know or an edge it does not
/// have: code 100, subcode 33, `GraphMethodException`.
pub(crate) fn unsupported(method: &str, object: &str) -> Answer {
    let body = EnvelopeBody {
        message: format!(
            "Unsupported {} request. Object with ID '{object}' does not exist, cannot be loaded \
             due to missing permissions, or does not support this operation. Please read the \
             Graph API documentation at https://developers.facebook.com/docs/graph-api",
            method.to_ascii_lowercase()
        ),
        kind: Some("GraphMethodException".to_owned()),
        code: 100,
        error_subcode: Some(33),
        error_data: None,
        fbtrace_id: Some(ids::fbtrace_id()),
    };
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: json_bytes(&Envelope { error: body }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphError;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn parse(a: &Answer) -> GraphError {
        GraphError::parse(a.status.as_u16(), &a.body).expect("envelope")
    }

    #[test]
    fn table_statuses_follow_the_reference() {
        for (code, status) in [
            (0, 401),
            (2, 503),
            (4, 400),
            (10, 403),
            (100, 400),
            (190, 401),
            (368, 403),
            (80007, 400),
            (130429, 400),
            (130497, 403),
            (131000, 500),
            (131016, 500),
            (131026, 400),
            (131031, 403),
            (131048, 400),
            (131056, 400),
            (131057, 500),
            (133010, 400),
            (133016, 400),
        ] {
            let a = envelope(code);
            assert_eq!(a.status.as_u16(), status, "code {code}");
            assert_eq!(parse(&a).code, code);
        }
    }

    #[test]
    fn envelopes_match_the_fixtures_except_trace_id() {
        for (file, code) in [
            ("error_131031.json", 131031),
            ("error_368.json", 368),
            ("error_130429.json", 130429),
            ("error_131048.json", 131048),
            ("error_131056.json", 131056),
        ] {
            let text = std::fs::read(format!("{FIXTURES}/{file}")).expect("fixture");
            let want = GraphError::parse(0, &text).expect("fixture envelope");
            let got = parse(&envelope(code));
            assert_eq!(got.message, want.message, "{file}");
            assert_eq!(got.details, want.details, "{file}");
            assert_eq!(got.kind, want.kind, "{file}");
            assert_ne!(got.fbtrace_id, want.fbtrace_id, "{file}");
        }
    }

    #[test]
    fn auth_error_has_subcode_and_no_error_data() {
        let v: serde_json::Value = serde_json::from_slice(&envelope(190).body).unwrap();
        assert_eq!(v["error"]["error_subcode"], 463);
        assert!(v["error"].get("error_data").is_none());
    }

    #[test]
    fn injection_overrides_status_and_body() {
        let a = injected(&ErrorInjection {
            code: 130429,
            http_status: Some(429),
            ..Default::default()
        });
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        let bad_status = injected(&ErrorInjection {
            code: 131031,
            http_status: Some(1000),
            ..Default::default()
        });
        assert_eq!(bad_status.status, StatusCode::FORBIDDEN);
        let verbatim = injected(&ErrorInjection {
            code: 131031,
            headers: Default::default(),
            body: Some("not json at all".into()),
            ..Default::default()
        });
        assert_eq!(&verbatim.body[..], b"not json at all");
    }

    #[test]
    fn unsupported_names_the_object_and_method() {
        let e = parse(&unsupported("POST", "123"));
        assert_eq!(e.code, 100);
        assert_eq!(e.subcode, Some(33));
        assert_eq!(e.kind.as_deref(), Some("GraphMethodException"));
        assert!(
            e.message
                .starts_with("Unsupported post request. Object with ID '123'")
        );
    }
}
