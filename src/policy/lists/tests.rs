//! The list parsers and lookups, against every documented spelling and edge.
use super::*;

const T: i64 = 1_795_845_600; // 2026-11-28T06:00:00Z

fn file() -> &'static Path {
    Path::new("blocklist.txt")
}

fn ips(text: &str) -> IpList {
    match IpList::parse(text, file()) {
        Ok(l) => l,
        Err(e) => panic!("{text:?} should parse: {e:?}"),
    }
}

fn errors(text: &str) -> Vec<ListError> {
    match IpList::parse(text, file()) {
        Ok(l) => panic!("{text:?} should not parse: {l:?}"),
        Err(e) => e,
    }
}

fn tokens(text: &str) -> TokenList {
    match TokenList::parse(text, Path::new("revoked-tokens.txt")) {
        Ok(l) => l,
        Err(e) => panic!("{text:?} should parse: {e:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|_| panic!("bad test network {s}"))
}

fn hit(list: &IpList, addr: &str, now: i64) -> Option<(String, usize)> {
    list.lookup(ip(addr), now)
        .map(|(n, e)| (n.to_string(), e.line))
}

#[test]
fn the_documented_example_parses_with_its_attributes() {
    let list = ips("203.0.113.7\n\
         198.51.100.0/24  until=2026-11-28T06:00:00Z  reason=\"SEV-2 token scraping\"\n\
         2001:db8:abcd::/48\n");
    assert_eq!(list.len(), 3);
    let all: Vec<(IpNet, Entry)> = list.iter().map(|(n, e)| (n, e.clone())).collect();
    assert_eq!(
        all,
        vec![
            (
                net("203.0.113.7/32"),
                Entry {
                    until: None,
                    reason: None,
                    line: 1
                }
            ),
            (
                net("198.51.100.0/24"),
                Entry {
                    until: Some(T),
                    reason: Some("SEV-2 token scraping".into()),
                    line: 2
                }
            ),
            (
                net("2001:db8:abcd::/48"),
                Entry {
                    until: None,
                    reason: None,
                    line: 3
                }
            ),
        ]
    );
    assert_eq!(
        hit(&list, "203.0.113.7", 0),
        Some(("203.0.113.7/32".into(), 1))
    );
    assert_eq!(
        hit(&list, "198.51.100.200", 0),
        Some(("198.51.100.0/24".into(), 2))
    );
    assert_eq!(
        hit(&list, "2001:db8:abcd:1::5", 0),
        Some(("2001:db8:abcd::/48".into(), 3))
    );
    assert_eq!(hit(&list, "203.0.113.8", 0), None);
    assert_eq!(hit(&list, "2001:db8:abce::1", 0), None);
}

#[test]
fn attributes_come_in_any_order_and_reasons_unescape() {
    let list = ips(r#"10.0.0.1 reason="say \"hi\" \\ # not a comment" until=2026-11-28T06:00:00Z"#);
    let (_, e) = list.iter().next().unwrap_or_else(|| panic!("one entry"));
    assert_eq!(e.until, Some(T));
    assert_eq!(e.reason.as_deref(), Some(r#"say "hi" \ # not a comment"#));
}

#[test]
fn an_empty_reason_is_no_reason() {
    let list = ips("10.0.0.1 reason=\"\"");
    assert_eq!(
        list.iter().next().map(|(_, e)| e.reason.clone()),
        Some(None)
    );
}

#[test]
fn comments_blank_lines_and_crlf_are_ignored() {
    let list = ips(
        "\u{feff}# header\r\n\r\n   \n\t# indented comment\n10.0.0.1# tight comment\n\
         10.0.0.2   # spaced comment until=nonsense\n  10.0.0.3  \r\n",
    );
    assert_eq!(list.len(), 3);
    let lines: Vec<usize> = list.iter().map(|(_, e)| e.line).collect();
    assert_eq!(lines, vec![5, 6, 7]);
}

#[test]
fn an_empty_file_is_a_valid_empty_list() {
    for text in ["", "\n\n", "# nothing here\n"] {
        assert!(ips(text).is_empty());
        assert!(tokens(text).is_empty());
    }
    assert_eq!(IpList::empty().lookup(ip("10.0.0.1"), 0), None);
    assert_eq!(TokenList::empty().lookup("abc", 0), None);
}

#[test]
fn every_bad_line_is_reported_with_its_line_number() {
    let text = "10.0.0.1\n\
         10.0.0.999\n\
         10.0.0.0/33\n\
         10.0.0.0/+8\n\
         10.0.0.7/24\n\
         10.0.0.2 until=2026-13-01T00:00:00Z\n\
         10.0.0.3 reason=\"never closed\n\
         10.0.0.4 colour=red\n\
         10.0.0.5 reason=unquoted\n\
         10.0.0.6 reason=\"bad \\n escape\"\n\
         10.0.0.8 until=2026-11-28T06:00:00Z until=2026-11-29T06:00:00Z\n\
         until=2026-11-28T06:00:00Z 10.0.0.9\n\
         10.0.0.10 10.0.0.11\n\
         [2001:db8::1]\n\
         10.0.0.12 reason=\"a\"b\n\
         10.0.0.13 until=\n\
         10.0.0.14 reason=\"a\" reason=\"b\"\n";
    let errs = errors(text);
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.message.as_str())).collect();
    let expect: [(usize, &str); 16] = [
        (2, "\"10.0.0.999\" is not an IP address or network"),
        (3, "bad prefix length \"33\": write a number from 0 to 32"),
        (4, "bad prefix length \"+8\""),
        (
            5,
            "host bits set: write 10.0.0.0/24 for the network, or 10.0.0.7 for the one address",
        ),
        (
            6,
            "until: \"2026-13-01T00:00:00Z\" is not an RFC 3339 instant",
        ),
        (7, "reason has no closing quote"),
        (8, "unknown attribute \"colour\""),
        (
            9,
            "reason=unquoted is not quoted: write reason=\"unquoted\"",
        ),
        (10, "unknown escape \\n in reason"),
        (11, "until= appears twice"),
        (12, "comes before the entry"),
        (
            13,
            "\"10.0.0.11\" is not an attribute: write one entry a line",
        ),
        (14, "\"[2001:db8::1]\" is not an IP address or network"),
        (15, "\"b\" follows the closing quote of reason"),
        (16, "until= has no instant"),
        (17, "reason= appears twice"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for ((line, message), (want_line, want)) in got.iter().zip(expect) {
        assert_eq!(*line, want_line);
        assert!(
            message.contains(want),
            "line {line}: {message:?} lacks {want:?}"
        );
        assert_eq!(message.chars().next().map(char::is_uppercase), Some(false));
    }
}

#[test]
fn errors_display_as_file_line_message() {
    let errs = errors("10.0.0.1\nnope\n");
    assert_eq!(
        errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "blocklist.txt:2: \"nope\" is not an IP address or network: write e.g. \
              203.0.113.7, 198.51.100.0/24 or 2001:db8:abcd::/48"
        ]
    );
}

#[test]
fn a_truncated_file_names_the_cut_line() {
    for cut in [
        "198.51.100.0/24  until=2026-11-28T06:00:00Z  reason=\"SEV-2 tok",
        "198.51.100.0/24  until=2026-11-2",
        "198.51.100.0/2",
        "198.51.10",
        "198.51.100.0/24  reason=",
        "198.51.100.0/24  unt",
    ] {
        let text = format!("10.0.0.1\n10.0.0.2\n{cut}");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{cut:?}: {errs:?}");
        let e = &errs[0];
        assert_eq!(e.line, 3, "{cut:?}");
        assert!(
            e.message
                .ends_with("(this last line has no line end: was the file cut short?)"),
            "{cut:?}: {}",
            e.message
        );
    }
    // A complete last line is not suspected of being cut.
    let errs = errors("10.0.0.1\n198.51.10\n");
    assert!(!errs[0].message.contains("cut short"));
}

#[test]
fn mapped_ipv4_entries_match_ipv4_clients_and_vice_versa() {
    let list = ips("::ffff:203.0.113.7\n::ffff:198.51.100.0/120\n192.0.2.1\n");
    assert_eq!(
        list.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(),
        vec!["203.0.113.7/32", "198.51.100.0/24", "192.0.2.1/32"]
    );
    assert_eq!(
        hit(&list, "203.0.113.7", 0),
        Some(("203.0.113.7/32".into(), 1))
    );
    assert_eq!(
        hit(&list, "::ffff:203.0.113.7", 0),
        Some(("203.0.113.7/32".into(), 1))
    );
    assert_eq!(
        hit(&list, "198.51.100.9", 0),
        Some(("198.51.100.0/24".into(), 2))
    );
    assert_eq!(
        hit(&list, "::ffff:192.0.2.1", 0),
        Some(("192.0.2.1/32".into(), 3))
    );
    assert_eq!(hit(&list, "::ffff:192.0.2.2", 0), None);
}

#[test]
fn an_ipv6_network_wider_than_the_mapped_range_matches_ipv6_clients_only() {
    let list = ips("::/0\n");
    assert!(list.lookup(ip("2001:db8::1"), 0).is_some());
    assert!(list.lookup(ip("::ffff:10.0.0.1"), 0).is_none());
    assert!(list.lookup(ip("10.0.0.1"), 0).is_none());
}

#[test]
fn whole_address_spaces_and_their_edges_match() {
    let list = ips("0.0.0.0/0\n::/0\n255.255.255.255\nffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n");
    assert_eq!(hit(&list, "0.0.0.0", 0), Some(("0.0.0.0/0".into(), 1)));
    assert_eq!(
        hit(&list, "255.255.255.254", 0),
        Some(("0.0.0.0/0".into(), 1))
    );
    assert_eq!(
        hit(&list, "255.255.255.255", 0),
        Some(("255.255.255.255/32".into(), 3))
    );
    assert_eq!(hit(&list, "::", 0), Some(("::/0".into(), 2)));
    assert_eq!(
        hit(&list, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0).map(|h| h.1),
        Some(4)
    );
}

#[test]
fn expired_entries_do_not_match() {
    let list = ips("10.0.0.1 until=2026-11-28T06:00:00Z\n");
    assert!(list.lookup(ip("10.0.0.1"), T - 1).is_some());
    assert!(list.lookup(ip("10.0.0.1"), T).is_none());
    assert!(list.lookup(ip("10.0.0.1"), T + 1).is_none());
}

#[test]
fn nested_networks_with_different_expiries_give_the_most_specific_in_force() {
    let list = ips("10.0.0.0/8 until=2026-11-28T08:00:00Z\n\
         10.1.0.0/16\n\
         10.1.2.0/24 until=2026-11-28T07:00:00Z\n\
         10.1.2.3 until=2026-11-28T06:00:00Z\n\
         10.2.0.0/16 until=2026-11-28T06:00:00Z\n");
    let h = 3600;
    assert_eq!(hit(&list, "10.1.2.3", T - 1).map(|x| x.1), Some(4));
    assert_eq!(hit(&list, "10.1.2.3", T).map(|x| x.1), Some(3));
    assert_eq!(hit(&list, "10.1.2.3", T + h).map(|x| x.1), Some(2));
    assert_eq!(hit(&list, "10.1.2.4", T).map(|x| x.1), Some(3));
    assert_eq!(hit(&list, "10.1.9.9", T).map(|x| x.1), Some(2));
    assert_eq!(hit(&list, "10.2.0.1", T - 1).map(|x| x.1), Some(5));
    assert_eq!(hit(&list, "10.2.0.1", T).map(|x| x.1), Some(1));
    assert_eq!(hit(&list, "10.2.0.1", T + 2 * h).map(|x| x.1), None);
    assert_eq!(hit(&list, "10.1.0.1", T + 2 * h).map(|x| x.1), Some(2));
    assert_eq!(hit(&list, "10.3.0.1", T + 2 * h), None);
    // An address after a nested network but still inside its encloser.
    assert_eq!(hit(&list, "10.255.0.1", T).map(|x| x.1), Some(1));
}

#[test]
fn duplicates_are_allowed_and_the_longest_lived_applies() {
    let list = ips("10.0.0.1 until=2026-11-28T06:00:00Z\n\
         10.0.0.1\n\
         10.0.0.1 until=2026-11-29T06:00:00Z\n\
         10.0.0.2 until=2026-11-28T06:00:00Z\n\
         10.0.0.2 until=2026-11-29T06:00:00Z\n");
    assert_eq!(list.len(), 5);
    assert_eq!(list.networks(), 2);
    assert_eq!(
        hit(&list, "10.0.0.1", T + 10 * 86_400).map(|x| x.1),
        Some(2)
    );
    assert_eq!(hit(&list, "10.0.0.2", T).map(|x| x.1), Some(5));
    assert_eq!(hit(&list, "10.0.0.2", T + 86_400), None);
}

#[test]
fn expiries_are_reported_in_their_window_and_scheduled() {
    let list = ips("10.0.0.1 until=2026-11-28T06:00:00Z\n\
         10.0.0.2 until=2026-11-28T07:00:00Z\n\
         10.0.0.3\n");
    let lines = |v: Vec<(IpNet, &Entry)>| v.iter().map(|(_, e)| e.line).collect::<Vec<_>>();
    assert_eq!(lines(list.expiring_between(T - 1, T)), vec![1]);
    assert_eq!(lines(list.expiring_between(T, T + 3600)), vec![2]);
    assert_eq!(lines(list.expiring_between(T - 1, T + 3600)), vec![1, 2]);
    assert!(list.expiring_between(T + 3600, i64::MAX).is_empty());
    assert_eq!(list.next_expiry(0), Some(T));
    assert_eq!(list.next_expiry(T), Some(T + 3600));
    assert_eq!(list.next_expiry(T + 3600), None);
}

#[test]
fn overlapping_networks_are_found_both_ways() {
    let blocked = ips("10.0.0.0/8\n192.0.2.7\n2001:db8::/32\n203.0.113.0/24\n");
    let allowed = ips("10.1.2.3\n10.1.0.0/16\n192.0.2.0/24\n2001:db8::/32\n198.51.100.1\n");
    let mut pairs: Vec<(String, String)> = blocked
        .overlapping(&allowed)
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            ("10.0.0.0/8".to_string(), "10.1.0.0/16".to_string()),
            ("10.0.0.0/8".to_string(), "10.1.2.3/32".to_string()),
            ("192.0.2.7/32".to_string(), "192.0.2.0/24".to_string()),
            ("2001:db8::/32".to_string(), "2001:db8::/32".to_string()),
        ]
    );
    assert_eq!(allowed.overlapping(&blocked).len(), 4);
    assert!(blocked.overlapping(&IpList::empty()).is_empty());
}

#[test]
fn ip_diffs_count_networks_added_and_removed() {
    let old = ips("10.0.0.1\n10.0.0.2\n2001:db8::/32\n");
    let new = ips("10.0.0.2 until=2026-11-28T06:00:00Z\n10.0.0.3\n10.0.0.3\n::ffff:10.0.0.4\n");
    assert_eq!(ip_diff(&old, &new), (2, 2));
    assert_eq!(ip_diff(&new, &old), (2, 2));
    assert_eq!(ip_diff(&old, &old), (0, 0));
    assert_eq!(ip_diff(&IpList::empty(), &old), (3, 0));
}

const SECRET: &str = "s3cr3t-join-token";
// The SHA-256 of SECRET.
fn secret_hex() -> String {
    hex::encode(Sha256::digest(SECRET.as_bytes()))
}

#[test]
fn plain_and_sha256_token_entries_both_match() {
    let list = tokens(&format!(
        "{SECRET}\nsha256:{} reason=\"leaked\"\nother-token until=2026-11-28T06:00:00Z\n",
        hex::encode(Sha256::digest(b"hashed-token")).to_uppercase()
    ));
    assert_eq!(list.len(), 3);
    assert_eq!(list.lookup(SECRET, 0).map(|e| e.line), Some(1));
    let hashed = list.lookup("hashed-token", 0);
    assert_eq!(hashed.map(|e| e.line), Some(2));
    assert_eq!(hashed.and_then(|e| e.reason.as_deref()), Some("leaked"));
    assert_eq!(list.lookup("other-token", T - 1).map(|e| e.line), Some(3));
    assert_eq!(list.lookup("other-token", T), None);
    assert_eq!(list.lookup("unknown", 0), None);
    // A sha256: entry is the digest of a token, not a token: its text does not match.
    assert_eq!(list.lookup(&format!("sha256:{}", secret_hex()), 0), None);
}

#[test]
fn a_token_and_its_digest_are_duplicates_and_the_longest_lived_applies() {
    let list = tokens(&format!(
        "{SECRET} until=2026-11-28T06:00:00Z\nsha256:{}\n",
        secret_hex()
    ));
    assert_eq!(list.lookup(SECRET, T + 1).map(|e| e.line), Some(2));
    assert_eq!(list.digests(), vec![secret_hex(), secret_hex()]);
    assert_eq!(list.expiring_between(T - 1, T).len(), 1);
    assert_eq!(list.next_expiry(0), Some(T));
    assert_eq!(list.next_expiry(T), None);
}

#[test]
fn bad_token_lines_are_reported() {
    let errs = TokenList::parse(
        "good\nsha256:abc\nsha256:\nsha256:zz8e4c9e1d3a3b9f2b3e0d4c1a7f8e6d5c4b3a29181716151413121110090807\nx reason=\"open\n",
        Path::new("revoked-tokens.txt"),
    )
    .err()
    .unwrap_or_default();
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 5]);
    assert!(errs[0].message.contains("is not sha256:<64 hex digits>"));
    assert!(errs[0]
        .to_string()
        .starts_with("revoked-tokens.txt:2: \"sha256:abc\""));
}

#[test]
fn token_debug_never_shows_a_token_or_digest() {
    let list = tokens(&format!("{SECRET}\n"));
    let shown = format!("{list:?}");
    assert!(!shown.contains(SECRET));
    assert!(!shown.contains(&secret_hex()[..16]));
    assert_eq!(shown, "TokenList { entries: 1, distinct: 1 }");
}

#[test]
fn token_diffs_count_digests_so_plain_and_hashed_forms_are_the_same() {
    let old = tokens(&format!("{SECRET}\nalpha\n"));
    let new = tokens(&format!("sha256:{}\nbeta\ngamma\n", secret_hex()));
    assert_eq!(token_diff(&old, &new), (2, 1));
    assert_eq!(token_diff(&new, &new), (0, 0));
}

const FOLDED: TokenFolding = TokenFolding {
    case_sensitive: false,
};

fn folded_tokens(text: &str) -> TokenList {
    match TokenList::parse_with(text, Path::new("revoked-tokens.txt"), FOLDED) {
        Ok(l) => l,
        Err(e) => panic!("{text:?} should parse: {e:?}"),
    }
}

#[test]
fn with_folding_a_plain_entry_in_any_case_revokes_the_folded_token() {
    let list = folded_tokens("ABC123xyz789\n");
    assert_eq!(list.lookup("abc123xyz789", 0).map(|e| e.line), Some(1));
    // Lookups are given folded tokens: an unfolded spelling is the request context's job.
    assert_eq!(list.lookup("ABC123xyz789", 0), None);
    // Without folding the entry is exactly what it says.
    let exact = tokens("ABC123xyz789\n");
    assert_eq!(exact.lookup("ABC123xyz789", 0).map(|e| e.line), Some(1));
    assert_eq!(exact.lookup("abc123xyz789", 0), None);
}

#[test]
fn with_folding_a_sha256_entry_is_the_digest_of_the_folded_token() {
    let entry = revoked_entry("ABC123xyz789 ", FOLDED);
    assert_eq!(
        entry,
        format!("sha256:{}", hex::encode(Sha256::digest(b"abc123xyz789")))
    );
    let list = folded_tokens(&format!("{entry}\n"));
    assert_eq!(list.lookup("abc123xyz789", 0).map(|e| e.line), Some(1));
    // The digest is taken as written, never folded again (hex case aside).
    let upper = folded_tokens(&format!("sha256:{}\n", &entry[7..].to_uppercase()));
    assert_eq!(upper.lookup("abc123xyz789", 0).map(|e| e.line), Some(1));
    let exact_entry = revoked_entry(
        "ABC123xyz789 ",
        TokenFolding {
            case_sensitive: true,
        },
    );
    assert_eq!(
        exact_entry,
        format!("sha256:{}", hex::encode(Sha256::digest(b"ABC123xyz789 ")))
    );
}
