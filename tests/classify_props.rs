//! Properties of the classifier that must hold for every input: it is total, its
//! normalisation is idempotent, and a guest path cannot be dodged by re-spelling it or by
//! putting a front controller (a script, a static file, the `public` folder) in front of it.

use http::Method;
use joinshield::policy::classify::{default_specs, Classified, RouteTable};
use proptest::prelude::*;

fn table() -> RouteTable {
    RouteTable::new(&default_specs()).expect("default routes compile")
}

/// A guest path of the default routes: its segments (`None` marks the token) and its class.
struct Template {
    segs: &'static [Option<&'static str>],
    class: &'static str,
    method: Method,
}

fn templates() -> Vec<Template> {
    const T: Option<&str> = None;
    let t = |segs, class, method| Template {
        segs,
        class,
        method,
    };
    vec![
        t(
            &[
                Some("api"),
                Some("v1"),
                Some("gallery"),
                T,
                Some("download"),
            ],
            "gallery_download",
            Method::GET,
        ),
        t(
            &[
                Some("api"),
                Some("v1"),
                Some("events"),
                T,
                Some("photos"),
                Some("12"),
                Some("download"),
            ],
            "gallery_download",
            Method::GET,
        ),
        t(
            &[Some("gallery"), T, Some("download")],
            "gallery_download",
            Method::HEAD,
        ),
        t(
            &[Some("api"), Some("v1"), Some("events"), T, Some("photos")],
            "upload",
            Method::POST,
        ),
        t(
            &[Some("api"), Some("v1"), Some("events"), T, Some("upload")],
            "upload",
            Method::PUT,
        ),
        t(
            &[Some("api"), Some("v1"), Some("events"), T],
            "events",
            Method::GET,
        ),
        t(
            &[Some("api"), Some("v1"), Some("events"), T, Some("photos")],
            "events",
            Method::GET,
        ),
        t(
            &[
                Some("api"),
                Some("v1"),
                Some("gallery"),
                T,
                Some("a"),
                Some("b"),
            ],
            "gallery",
            Method::DELETE,
        ),
        t(&[Some("gallery"), T], "gallery", Method::GET),
    ]
}

/// How to re-spell a guest path. Structure and case changes stay in the literal prefix before
/// the token: after it, Laravel's own `{any}` catch-all routes a changed spelling to a
/// different (still guest) class, which the shield then follows (see `respelled_anywhere`).
#[derive(Debug, Clone)]
struct Spelling {
    template: usize,
    token: String,
    /// Per byte of the path: percent-encode it (slashes become `%2F`), upper or lower hex.
    encode: Vec<(bool, bool)>,
    /// Per separator before the token: double it.
    double: Vec<bool>,
    /// Per literal before the token: a case mask.
    case: Vec<u32>,
    /// A dot segment inserted before some literal of the prefix.
    dots: Option<(usize, usize)>,
    trailing_slashes: usize,
    front: usize,
    absolute: usize,
    query: usize,
}

const DOTS: &[&str] = &[".", "x/..", "%2E", "x/%2e%2E", "./.", "a/b/../..", "x%2F.."];
const FRONTS: &[&str] = &[
    "",
    "/index.php",
    "/index.php/index.php",
    "/%69ndex.php",
    "/index%2Ephp",
    "/INDEX.PHP",
    "/Index.Php/index.php",
    "/public/index.php",
    "/PUBLIC/INDEX.PHP",
    "/public%2Findex.php",
    "/public/index.ph%70",
    "/server.php",
    "/server%2Ephp",
    "/sub/index.php",
    "/a/b/c.php",
    "/x/../public/index.php",
    "//index.php/",
    "/index.php;x",
    "/index.php%2F",
    "/public/index.php/public/index.php",
    "/a/index.php/xxxx",
    "/favicon.ico",
    "/public",
];
const ABSOLUTES: &[&str] = &["", "http://example.org", "https://u@h:8443", "HTTP://H"];
const QUERIES: &[&str] = &["", "?a=b", "?x=/download", "#frag", "?", "#/../x", "?_=1#a"];

fn spelling() -> impl Strategy<Value = Spelling> {
    let n = templates().len();
    (
        0..n,
        "[A-Za-z0-9_~.-]{1,32}".prop_filter("not a dot segment", |t| t != "." && t != ".."),
        prop::collection::vec((prop::bool::weighted(0.2), any::<bool>()), 80),
        prop::collection::vec(prop::bool::weighted(0.2), 8),
        prop::collection::vec(any::<u32>(), 8),
        prop::option::weighted(0.3, (0..8usize, 0..DOTS.len())),
        0..4usize,
        0..FRONTS.len(),
        0..ABSOLUTES.len(),
        0..QUERIES.len(),
    )
        .prop_map(
            |(
                template,
                token,
                encode,
                double,
                case,
                dots,
                trailing_slashes,
                front,
                absolute,
                query,
            )| {
                Spelling {
                    template,
                    token,
                    encode,
                    double,
                    case,
                    dots,
                    trailing_slashes,
                    front,
                    absolute,
                    query,
                }
            },
        )
}

/// Builds the raw target for a spelling; `anywhere` lets structure and case changes reach
/// past the token too.
fn build(s: &Spelling, anywhere: bool) -> Vec<u8> {
    build_behind(s, anywhere, FRONTS[s.front].as_bytes())
}

/// The same behind the front-controller prefix `front`.
fn build_behind(s: &Spelling, anywhere: bool, front: &[u8]) -> Vec<u8> {
    let tpl = &templates()[s.template];
    let token_at = tpl.segs.iter().position(Option::is_none).unwrap_or(0);
    let reach = if anywhere { tpl.segs.len() } else { token_at };
    // Decoded segments, with dot segments spliced in.
    let mut segs: Vec<String> = Vec::new();
    for (i, seg) in tpl.segs.iter().enumerate() {
        if let Some((at, kind)) = s.dots {
            // Before a literal of the prefix (not right before the token, where Laravel would
            // bind the dot segment itself as the token) unless `anywhere`.
            let at = at % reach.max(1);
            if i == at && (anywhere || at < token_at) {
                segs.push(DOTS[kind].to_owned());
            }
        }
        let text = match seg {
            None => s.token.clone(),
            Some(lit) if i < reach => lit
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if s.case.get(i).is_some_and(|m| m >> (j % 32) & 1 == 1) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
            Some(lit) => (*lit).to_owned(),
        };
        segs.push(text);
    }
    // Joined with separators (some doubled), and some bytes percent-encoded.
    let mut path = Vec::new();
    let mut k = 0;
    for (i, seg) in segs.iter().enumerate() {
        let double = i <= reach && s.double.get(i).copied().unwrap_or(false);
        for sep in std::iter::once(b'/').chain(double.then_some(b'/')) {
            push_maybe_encoded(&mut path, sep, s.encode.get(k).copied(), i > 0);
            k += 1;
        }
        // Dot segments are spelled out already (`%2E`); their bytes are not re-encoded.
        let is_dot = DOTS.contains(&seg.as_str());
        for &b in seg.as_bytes() {
            let choice = if is_dot {
                None
            } else {
                s.encode.get(k).copied()
            };
            push_maybe_encoded(&mut path, b, choice, true);
            k += 1;
        }
    }
    path.extend(std::iter::repeat_n(b'/', s.trailing_slashes));
    let mut target = Vec::new();
    target.extend_from_slice(ABSOLUTES[s.absolute].as_bytes());
    target.extend_from_slice(front);
    target.extend_from_slice(&path);
    target.extend_from_slice(QUERIES[s.query].as_bytes());
    target
}

fn push_maybe_encoded(out: &mut Vec<u8>, b: u8, choice: Option<(bool, bool)>, may: bool) {
    match choice {
        Some((true, upper)) if may => {
            let hex = if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            };
            out.extend_from_slice(hex.as_bytes());
        }
        _ => out.push(b),
    }
}

/// A front-controller prefix a web server or `php -S` may hand Laravel what follows of: a
/// leading run of segments ending in a script (`.php`, any case), a static file or the
/// `public` folder, with some of its bytes percent-encoded. Segment names use letters that
/// cannot spell a route's literal (`api`, `gallery`), so Laravel has no other reading of it.
fn front_controller() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec("[0-9a-f_-]{1,8}", 0..3),
        prop_oneof![
            "[0-9a-f]{1,8}\\.[pP][hH][pP]",
            "[0-9a-f]{1,8}\\.(ico|txt|css|js)",
            "(?i:public)",
        ],
        prop::collection::vec((prop::bool::weighted(0.15), any::<bool>()), 48),
    )
        .prop_map(|(dirs, last, encode)| {
            let text: String = dirs
                .iter()
                .chain(std::iter::once(&last))
                .map(|seg| format!("/{seg}"))
                .collect();
            let mut out = Vec::new();
            for (i, &b) in text.as_bytes().iter().enumerate() {
                push_maybe_encoded(&mut out, b, encode.get(i).copied(), i > 0);
            }
            out
        })
}

fn name_of(table: &RouteTable, c: &Classified) -> Option<String> {
    c.class.map(|i| table.names()[usize::from(i)].clone())
}

/// Arbitrary targets, biased towards ones the default routes classify.
fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        spelling().prop_map(|s| build(&s, true)),
        prop::collection::vec(
            prop::sample::select(vec![
                "/",
                "//",
                "%",
                "%2F",
                "%2e",
                ".",
                "..",
                "?",
                "#",
                "\\",
                "api",
                "v1",
                "events",
                "gallery",
                "download",
                "index.php",
                "T0k",
                "\u{ff}",
                "%FF",
                "+",
                "http://h",
            ]),
            0..20
        )
        .prop_map(|parts| parts.concat().into_bytes()),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::from_bytes(b"post").expect("a valid method"),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn classify_target_is_total_over_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), m in method()) {
        let table = table();
        let c = table.classify_target(&m, &bytes);
        if let Some(class) = c.class {
            prop_assert!(usize::from(class) < table.names().len());
        }
        let _ = table.canonical_path(&m, &bytes);
        let _ = table.classify(&m, &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn normalisation_is_idempotent(t in target(), m in method()) {
        let table = table();
        let first = table.classify_target(&m, &t);
        match table.canonical_path(&m, &t) {
            None => prop_assert_eq!(first.class, None),
            Some(canonical) => {
                prop_assert_eq!(&table.classify_target(&m, canonical.as_bytes()), &first, "canonical {}", canonical);
                prop_assert_eq!(table.canonical_path(&m, canonical.as_bytes()), Some(canonical.clone()));
                // What a hyper server hands the shield for the canonical target.
                let uri: http::Uri = canonical.parse().expect("a canonical path is a valid URI");
                prop_assert_eq!(&table.classify(&m, uri.path()), &first);
            }
        }
    }

    #[test]
    fn a_guest_path_cannot_be_dodged(s in spelling()) {
        let table = table();
        let tpl = &templates()[s.template];
        let target = build(&s, false);
        let got = table.classify_target(&tpl.method, &target);
        let name = name_of(&table, &got);
        prop_assert_eq!(name.as_deref(), Some(tpl.class), "{}", String::from_utf8_lossy(&target));
        prop_assert_eq!(got.token.as_deref(), Some(s.token.as_str()), "{}", String::from_utf8_lossy(&target));
    }

    #[test]
    fn a_guest_path_cannot_be_dodged_by_a_front_controller(s in spelling(), front in front_controller()) {
        let table = table();
        let tpl = &templates()[s.template];
        let target = build_behind(&s, false, &front);
        let got = table.classify_target(&tpl.method, &target);
        let name = name_of(&table, &got);
        prop_assert_eq!(name.as_deref(), Some(tpl.class), "{}", String::from_utf8_lossy(&target));
        prop_assert_eq!(got.token.as_deref(), Some(s.token.as_str()), "{}", String::from_utf8_lossy(&target));
    }

    #[test]
    fn respelled_anywhere_a_guest_path_stays_a_guest_route(s in spelling()) {
        let table = table();
        let tpl = &templates()[s.template];
        let target = build(&s, true);
        let got = table.classify_target(&tpl.method, &target);
        prop_assert!(got.class.is_some(), "{}", String::from_utf8_lossy(&target));
        prop_assert!(got.token.is_some(), "{}", String::from_utf8_lossy(&target));
    }
}
