//! The order of the checks, as a table: every check that can apply to a request, alone and in
//! every pair, and the first of each pair in SPEC §4's order is the answer.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::policy::limits::{KeyKind, KeyedLimiter, LimitRule, Mode};
use crate::policy::lists::{IpList, TokenList};
use crate::policy::rules::{ClassMask, SwitchRule};
use crate::policy::tokens::TokenFolding;

const NOW: i64 = 1_800_000_000;
const CLIENT: &str = "203.0.113.7";
const TOKEN: &str = "tok-guessed-123";

/// One check that can apply, in the order the decision runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Blocked,
    Banned,
    Paused,
    Revoked,
    Malformed,
    Limited,
}

const ORDER: [Check; 6] = [
    Check::Blocked,
    Check::Banned,
    Check::Paused,
    Check::Revoked,
    Check::Malformed,
    Check::Limited,
];

/// The code of the denial each check gives.
fn code(check: Check) -> &'static str {
    match check {
        Check::Blocked => "ip_blocked",
        Check::Banned => "ip_banned",
        Check::Paused => "service_paused",
        Check::Revoked => "token_revoked",
        Check::Malformed => "invalid_token",
        Check::Limited => "token_rate_limited",
    }
}

/// Rules, bans and settled limits under which exactly the checks `on` apply to the request.
fn world(on: &[Check]) -> (Rules, Bans, Vec<Settled>) {
    let has = |c| on.contains(&c);
    let mut rules = Rules::default();
    if has(Check::Blocked) {
        rules.blocklist =
            Arc::new(IpList::parse(&format!("{CLIENT}\n"), Path::new("b.txt")).unwrap());
    }
    let bans = Bans::new();
    if has(Check::Banned) {
        let net = format!("{CLIENT}/32").parse().unwrap();
        bans.ban_manual(net, Duration::from_secs(60), "test", NOW);
    }
    if has(Check::Paused) {
        rules.switches.push(SwitchRule {
            name: "maintenance".into(),
            message: "Back soon.".into(),
            classes: ClassMask::of(&[0]),
            until: None,
            replaced_until: None,
            retry_after: Duration::from_secs(300),
        });
    }
    if has(Check::Revoked) {
        rules.revoked =
            Arc::new(TokenList::parse(&format!("{TOKEN}\n"), Path::new("r.txt")).unwrap());
    }
    // A pattern the token matches, or one it does not.
    let pattern = if has(Check::Malformed) {
        "^[0-9]+$"
    } else {
        "^tok-"
    };
    rules.token_pattern = Some(regex::Regex::new(pattern).unwrap());
    // One shared limit: the cluster's word decides it, so the table needs no clock.
    let rate = crate::units::parse_rate("60/min").unwrap();
    rules.limits.push(LimitRule {
        name: "guest-ip".into(),
        classes: ClassMask::of(&[0]),
        key: KeyKind::Ip,
        mode: Mode::Enforce,
        until: None,
        replaced_until: None,
        stands_in: false,
        limiter: Arc::new(KeyedLimiter::with_clock(
            rate,
            NonZeroU32::MIN,
            10,
            governor::clock::QuantaClock::default(),
        )),
        shared: true,
    });
    let settled = vec![if has(Check::Limited) {
        Settled::Denied(Duration::from_secs(1))
    } else {
        Settled::Granted
    }];
    (rules, bans, settled)
}

/// The verdict's code for a guest request (class 0) with `on` applying, or `None`: forwarded.
fn verdict(on: &[Check], class: Option<ClassId>, allowlisted: bool) -> Option<&'static str> {
    let (rules, bans, settled) = world(on);
    let ip: IpAddr = CLIENT.parse().unwrap();
    let client = ClientKey::new(ip, 64);
    let token = JoinToken::new(TOKEN.into(), TokenFolding::default());
    let facts = Facts {
        ip,
        class,
        classes: class.map(ClassMask::one).unwrap_or_default(),
        token: Some(&token),
        client,
        client_hash: limits::client_key_hash(client),
        now_unix: NOW,
        allowlisted,
        settled: &settled,
    };
    decide(&rules, &bans, &facts, &mut Vec::new()).map(|d| d.code())
}

#[test]
fn nothing_applying_forwards() {
    assert_eq!(verdict(&[], Some(0), false), None);
}

#[test]
fn each_check_alone_gives_its_own_denial() {
    for check in ORDER {
        assert_eq!(
            verdict(&[check], Some(0), false),
            Some(code(check)),
            "{check:?}"
        );
    }
}

#[test]
fn of_every_two_checks_that_apply_the_earlier_one_answers() {
    for (i, first) in ORDER.iter().enumerate() {
        for later in &ORDER[i + 1..] {
            assert_eq!(
                verdict(&[*first, *later], Some(0), false),
                Some(code(*first)),
                "{first:?} and {later:?}"
            );
        }
    }
}

#[test]
fn outside_every_route_class_only_the_blocklist_and_bans_apply() {
    for check in ORDER {
        let expected = matches!(check, Check::Blocked | Check::Banned).then(|| code(check));
        assert_eq!(verdict(&[check], None, false), expected, "{check:?}");
    }
}

#[test]
fn an_allowlisted_client_skips_the_limits_and_nothing_else() {
    for check in ORDER {
        let expected = (check != Check::Limited).then(|| code(check));
        assert_eq!(verdict(&[check], Some(0), true), expected, "{check:?}");
    }
}

/// The verdict for `sent` against a revoked-tokens list holding `listed` (plain), folded by
/// the default `[tokens]`, with the default token pattern.
fn token_verdict(listed: &str, sent: &str) -> Option<&'static str> {
    let rules = Rules {
        revoked: Arc::new(
            TokenList::parse_with(
                &format!("{listed}\n"),
                Path::new("r.txt"),
                TokenFolding::default(),
            )
            .unwrap(),
        ),
        token_pattern: Some(regex::Regex::new("^[A-Za-z0-9_-]{8,128}$").unwrap()),
        ..Rules::default()
    };
    let ip: IpAddr = CLIENT.parse().unwrap();
    let client = ClientKey::new(ip, 64);
    let token = JoinToken::new(sent.into(), TokenFolding::default());
    let facts = Facts {
        ip,
        class: Some(0),
        classes: ClassMask::one(0),
        token: Some(&token),
        client,
        client_hash: limits::client_key_hash(client),
        now_unix: NOW,
        allowlisted: false,
        settled: &[],
    };
    decide(&rules, &Bans::new(), &facts, &mut Vec::new()).map(|d| d.code())
}

#[test]
fn every_case_and_trailing_blank_spelling_of_a_revoked_token_is_revoked() {
    for sent in [
        "Revoked-Token-42",
        "revoked-token-42",
        "REVOKED-TOKEN-42",
        "Revoked-Token-42 ",
        "rEVOKED-tOKEN-42\t",
        "revoked-token-42 \t ",
    ] {
        assert_eq!(
            token_verdict("Revoked-Token-42", sent),
            Some("token_revoked"),
            "{sent:?}"
        );
    }
    // Other tokens are not revoked; a trailing blank does not make a valid token malformed.
    assert_eq!(token_verdict("Revoked-Token-42", "Other-Token-42"), None);
    assert_eq!(token_verdict("Revoked-Token-42", "Other-Token-42 "), None);
    // A leading blank is part of the token: not this one, and not well-formed either.
    assert_eq!(
        token_verdict("Revoked-Token-42", " revoked-token-42"),
        Some("invalid_token")
    );
}

#[test]
fn a_switch_or_limit_of_any_class_a_method_override_reaches_applies() {
    // The request is classified as class 0 (its POST route), and a method override may take
    // it to class 1: a switch pausing class 1 pauses it, a limit of class 1 counts it.
    let mut rules = Rules::default();
    rules.switches.push(SwitchRule {
        name: "downloads".into(),
        message: "Paused.".into(),
        classes: ClassMask::of(&[1]),
        until: None,
        replaced_until: None,
        retry_after: Duration::from_secs(60),
    });
    let ip: IpAddr = CLIENT.parse().unwrap();
    let client = ClientKey::new(ip, 64);
    let facts = |classes| Facts {
        ip,
        class: Some(0),
        classes,
        token: None,
        client,
        client_hash: limits::client_key_hash(client),
        now_unix: NOW,
        allowlisted: false,
        settled: &[],
    };
    let bans = Bans::new();
    let got = decide(
        &rules,
        &bans,
        &facts(ClassMask::of(&[0, 1])),
        &mut Vec::new(),
    );
    assert_eq!(got.map(|d| d.code()), Some("service_paused"));
    assert_eq!(
        decide(&rules, &bans, &facts(ClassMask::one(0)), &mut Vec::new()),
        None
    );
    rules.switches.clear();
    let rate = crate::units::parse_rate("1/h").unwrap();
    rules.limits.push(LimitRule {
        name: "download-ip".into(),
        classes: ClassMask::of(&[1]),
        key: KeyKind::Ip,
        mode: Mode::Enforce,
        until: None,
        replaced_until: None,
        stands_in: false,
        limiter: Arc::new(KeyedLimiter::with_clock(
            rate,
            NonZeroU32::MIN,
            10,
            governor::clock::QuantaClock::default(),
        )),
        shared: false,
    });
    let both = facts(ClassMask::of(&[0, 1]));
    assert_eq!(decide(&rules, &bans, &both, &mut Vec::new()), None);
    let second = decide(&rules, &bans, &both, &mut Vec::new());
    assert_eq!(second.map(|d| d.code()), Some("token_rate_limited"));
}
