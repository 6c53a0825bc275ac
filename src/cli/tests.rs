//! The admin commands' arguments and the requests they make.

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: AdminCommand,
}

fn plan_of(args: &[&str]) -> (AdminArgs, Call) {
    let cli = Cli::try_parse_from(std::iter::once("wagate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    plan(cli.command)
}

#[test]
fn filters_become_the_query_and_globals_may_follow_the_subcommand() {
    let (admin, call) = plan_of(&[
        "breakers", "list", "--state", "held", "--cause", "131031", "--json",
    ]);
    assert!(admin.json);
    assert_eq!(call.method, Method::GET);
    assert_eq!(call.path, "/admin/breakers?state=held&cause=131031");
    let (_, call) = plan_of(&["audit", "--number", "200", "--limit", "5"]);
    assert_eq!(call.path, "/admin/audit?number=200&limit=5");
}

#[test]
fn a_trip_sends_its_reason_and_ttl() {
    let (_, call) = plan_of(&[
        "breakers",
        "trip",
        "200",
        "--reason",
        "campaign bug",
        "--ttl",
        "2h",
    ]);
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/admin/breakers/200/trip");
    assert_eq!(
        call.body,
        Some(json!({"reason": "campaign bug", "ttl": "2h"}))
    );
    let (_, call) = plan_of(&["wabas", "reset", "100"]);
    assert_eq!(call.path, "/admin/wabas/100/reset");
    assert_eq!(call.body, Some(json!({})));
}

#[test]
fn ids_are_digits_and_ttl_belongs_to_trip() {
    for args in [
        &["breakers", "show", "../metrics"][..],
        &["breakers", "reset", "12a"],
        &["breakers", "reset", "200", "--ttl", "2h"],
        &["breakers", "trip", "200", "--ttl", "soon"],
        &["audit", "--number", "x"],
    ] {
        let parsed = Cli::try_parse_from(std::iter::once("wagate").chain(args.iter().copied()));
        assert!(parsed.is_err(), "{args:?} parsed");
    }
}

#[test]
fn the_token_is_redacted_in_debug() {
    let (admin, _) = plan_of(&["breakers", "list", "--token", "s3cret-value"]);
    assert!(!format!("{admin:?}").contains("s3cret-value"));
}
