use super::payload::{build, meta_json, text_date};
use super::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture readable")
}

fn request(kind: WebhookKind) -> WebhookRequest {
    WebhookRequest {
        url: "http://127.0.0.1:9/hook".into(),
        app_secret: AppSecret::new("test-app-secret"),
        kind,
        phone_number_id: Some("200000000000001".into()),
        phone_number_ids: Vec::new(),
        expires_in: None,
        repeat: None,
        bad_signature: false,
        code: None,
        waba_id: None,
        recipient_id: None,
        event: None,
        ban_state: None,
        restriction_type: None,
        violation_type: None,
        body: None,
    }
}

#[test]
fn signature_matches_the_fixture_readme_vectors() {
    let body = fixture("webhook_status_failed_131031.json");
    assert_eq!(body.len(), 638, "fixture bytes changed");
    assert_eq!(
        sign_webhook("test-app-secret", &body),
        "sha256=2d45e06e21d89f53153c7f147da175b185969a5db51666735083bac5145531a7"
    );
    assert_eq!(
        sign_webhook("wrong-secret", &body),
        "sha256=c5016c2114031632ac39a81c3ca7cdc3e8158a06e048fee27f206d61ea99d247"
    );
    assert_eq!(
        sign_webhook("test-app-secret", &fixture("webhook_inbound_text.json")),
        "sha256=bb32e9cccb789a5bbc6cb3c11ae63954ed463ed18876a9f7765405b8f12c83ca"
    );
}

#[test]
fn meta_json_escapes_slashes_and_non_ascii() {
    #[derive(Serialize)]
    struct S {
        a: &'static str,
    }
    let out = meta_json(&S {
        a: "https://x/Ol\u{e1} \u{1f64f}",
    });
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"a":"https:\/\/x\/Ol\u00e1 \ud83d\ude4f"}"#
    );
}

#[test]
fn status_failed_is_shaped_like_the_fixture() {
    let bytes = build(&request(WebhookKind::StatusFailed)).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.contains(r#"https:\/\/developers.facebook.com"#),
        "{text}"
    );
    let mut got: Value = serde_json::from_slice(&bytes).unwrap();
    let want: Value =
        serde_json::from_slice(&fixture("webhook_status_failed_131031.json")).unwrap();
    let status = &mut got["entry"][0]["changes"][0]["value"]["statuses"][0];
    assert!(status["id"].as_str().unwrap().starts_with("wamid."));
    assert!(
        status["timestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1_700_000_000
    );
    let fixture_status = &want["entry"][0]["changes"][0]["value"]["statuses"][0];
    status["id"] = fixture_status["id"].clone();
    status["timestamp"] = fixture_status["timestamp"].clone();
    // The display number is derived from the id rather than the fixture's.
    got["entry"][0]["changes"][0]["value"]["metadata"]["display_phone_number"] =
        "15550001111".into();
    assert_eq!(got, want);
}

#[test]
fn status_failed_takes_code_and_waba() {
    let mut r = request(WebhookKind::StatusFailed);
    r.code = Some(368);
    r.waba_id = Some("999".into());
    let v: Value = serde_json::from_slice(&build(&r).unwrap()).unwrap();
    assert_eq!(v["entry"][0]["id"], "999");
    let error = &v["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0];
    assert_eq!(error["code"], 368);
    assert_eq!(
        error["title"],
        "Temporarily blocked for policies violations"
    );
    r.phone_number_id = Some("not-a-number".into());
    assert!(matches!(build(&r), Err(WebhookError::InvalidField(_))));
}

#[test]
fn account_update_disabled_is_shaped_like_the_fixture() {
    let bytes = build(&request(WebhookKind::AccountUpdate)).unwrap();
    let mut got: Value = serde_json::from_slice(&bytes).unwrap();
    let want: Value =
        serde_json::from_slice(&fixture("webhook_account_update_disabled.json")).unwrap();
    assert!(got["entry"][0]["time"].as_u64().unwrap() > 1_700_000_000);
    got["entry"][0]["time"] = want["entry"][0]["time"].clone();
    got["entry"][0]["changes"][0]["value"]["ban_info"]["waba_ban_date"] =
        want["entry"][0]["changes"][0]["value"]["ban_info"]["waba_ban_date"].clone();
    assert_eq!(got, want);
}

#[test]
fn account_update_restriction_and_reinstate() {
    let mut r = request(WebhookKind::AccountUpdate);
    r.event = Some("ACCOUNT_RESTRICTION".into());
    let v: Value = serde_json::from_slice(&build(&r).unwrap()).unwrap();
    let value = &v["entry"][0]["changes"][0]["value"];
    assert_eq!(value["event"], "ACCOUNT_RESTRICTION");
    assert_eq!(
        value["restriction_info"][0]["restriction_type"],
        "RESTRICTED_BIZ_INITIATED_MESSAGING"
    );
    assert!(
        value["restriction_info"][0]["expiration"].as_u64().unwrap()
            > v["entry"][0]["time"].as_u64().unwrap()
    );
    assert!(value.get("ban_info").is_none());

    r.event = None;
    r.ban_state = Some("REINSTATE".into());
    let v: Value = serde_json::from_slice(&build(&r).unwrap()).unwrap();
    assert_eq!(
        v["entry"][0]["changes"][0]["value"]["ban_info"]["waba_ban_state"],
        "REINSTATE"
    );

    r.event = Some("SOMETHING_ELSE".into());
    assert!(matches!(build(&r), Err(WebhookError::UnknownEvent(_))));
}

#[test]
fn raw_is_sent_verbatim_and_needs_a_body() {
    let mut r = request(WebhookKind::Raw);
    assert!(matches!(build(&r), Err(WebhookError::InvalidField(_))));
    r.body = Some("{\"x\": \"a\\/b\"}\n".into());
    assert_eq!(build(&r).unwrap(), b"{\"x\": \"a\\/b\"}\n");
}

#[test]
fn text_date_matches_known_days() {
    assert_eq!(text_date(0), "January 1, 1970");
    assert_eq!(text_date(1_786_700_300), "August 14, 2026");
    assert_eq!(text_date(951_782_400), "February 29, 2000");
    assert_eq!(text_date(4_107_542_400), "March 1, 2100");
}

#[tokio::test]
async fn send_rejects_non_http_urls_before_connecting() {
    for url in [
        "https://127.0.0.1/hook",
        "127.0.0.1:80/hook",
        "/hook",
        "not a url",
    ] {
        let mut r = request(WebhookKind::StatusFailed);
        r.url = url.into();
        assert!(
            matches!(send_webhook(&r).await, Err(WebhookError::InvalidUrl(_))),
            "{url}"
        );
    }
}

#[test]
fn app_secret_is_redacted_in_debug() {
    let text = format!("{:?}", request(WebhookKind::Raw));
    assert!(!text.contains("test-app-secret"), "{text}");
}

#[test]
fn a_batch_names_every_number_once() {
    let mut batch = request(WebhookKind::StatusFailed);
    batch.phone_number_ids = vec!["200000000000011".into(), "200000000000012".into()];
    let body: Value = serde_json::from_slice(&build(&batch).unwrap()).unwrap();
    let changes = body["entry"][0]["changes"].as_array().unwrap();
    let numbers: Vec<&str> = changes
        .iter()
        .map(|c| c["value"]["metadata"]["phone_number_id"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["200000000000011", "200000000000012"]);
    batch.phone_number_ids = vec!["not-a-number".into()];
    assert!(build(&batch).is_err());
}

#[test]
fn a_restriction_expires_when_asked() {
    let mut restriction = request(WebhookKind::AccountUpdate);
    restriction.event = Some("ACCOUNT_RESTRICTION".into());
    restriction.expires_in = Some(60);
    let body: Value = serde_json::from_slice(&build(&restriction).unwrap()).unwrap();
    let value = &body["entry"][0]["changes"][0]["value"];
    let expiration = value["restriction_info"][0]["expiration"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 55..=now + 65).contains(&expiration),
        "{expiration} vs {now}"
    );
    assert_eq!(format!("{:?}", restriction.app_secret), "<redacted>");
}
