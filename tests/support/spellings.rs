//! Spellings of guest and near-guest request targets: the generator of the differential test
//! against Laravel's router (`tests/laravel_routes.rs`), shared with the end-to-end replay in
//! `tests/hardening_identity.rs`, and the list of front-controller prefixes tried in front of
//! them.

use rand::rngs::StdRng;
use rand::Rng;

/// A join token: mostly the real alphabet, sometimes characters that need care.
pub fn token(rng: &mut StdRng) -> String {
    const PLAIN: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let len = rng.random_range(1..=24);
    let mut t: String = (0..len)
        .map(|_| char::from(PLAIN[rng.random_range(0..PLAIN.len())]))
        .collect();
    if rng.random_bool(0.2) {
        let odd = [
            ".",
            "..",
            "%",
            "+",
            " ",
            "~",
            "é",
            "index.php",
            "%41",
            ":",
            "@",
            ";",
        ];
        let at = rng.random_range(0..=t.len());
        t.insert_str(at, odd[rng.random_range(0..odd.len())]);
    }
    if rng.random_bool(0.05) {
        t = [".", ".."][rng.random_range(0..2)].to_owned();
    }
    t
}

/// A decoded path: a guest path of the default routes, or a near miss.
pub fn base_path(rng: &mut StdRng, t: &str) -> String {
    let rests = [
        "x",
        "photos",
        "upload",
        "download",
        "photos/1",
        "photos/1/download",
        "a/b/c",
        "photos/1/download/x",
    ];
    let rest = rests[rng.random_range(0..rests.len())];
    let guest = [
        format!("/api/v1/gallery/{t}/download"),
        format!("/api/v1/gallery/{t}/photos/7/download"),
        format!("/api/v1/events/{t}/photos/7/download"),
        format!("/gallery/{t}/download"),
        format!("/api/v1/events/{t}/upload"),
        format!("/api/v1/events/{t}/photos"),
        format!("/api/v1/events/{t}"),
        format!("/api/v1/events/{t}/{rest}"),
        format!("/api/v1/gallery/{t}"),
        format!("/api/v1/gallery/{t}/{rest}"),
        format!("/gallery/{t}"),
        format!("/gallery/{t}/{rest}"),
    ];
    let siblings = [
        format!("/api/v1/eventsX/{t}"),
        format!("/api/v1/event/{t}"),
        format!("/api/v2/events/{t}"),
        "/api/v1/events".to_owned(),
        "/api/v1/gallery".to_owned(),
        "/gallery".to_owned(),
        format!("/galleryX/{t}"),
        format!("/api/v1/gallery{t}"),
        format!("/api/v1/{t}/events"),
        "/api/v1/users/5".to_owned(),
        "/".to_owned(),
        format!("/x/api/v1/events/{t}"),
    ];
    if rng.random_bool(0.8) {
        guest[rng.random_range(0..guest.len())].clone()
    } else {
        siblings[rng.random_range(0..siblings.len())].clone()
    }
}

/// Re-spells a decoded path the ways an attacker (or a confused client) could.
pub fn respell(rng: &mut StdRng, path: &str) -> Vec<u8> {
    let mut segs: Vec<String> = path.split('/').skip(1).map(str::to_owned).collect();
    if rng.random_bool(0.2) {
        for s in &mut segs {
            if rng.random_bool(0.3) && !s.is_empty() {
                *s = flip_case(rng, s);
            }
        }
    }
    if rng.random_bool(0.15) && !segs.is_empty() {
        let at = rng.random_range(0..segs.len());
        let dots = [".", "x/..", "%2E", "%2e%2E", "./.", "a/b/../.."];
        segs.insert(at, dots[rng.random_range(0..dots.len())].to_owned());
    }
    let mut out = String::new();
    for s in &segs {
        out.push_str(match rng.random_range(0..48) {
            0 => "//",
            1 => "%2F",
            2 => "%2f",
            3 => "/%2F",
            4 => "\\",
            _ => "/",
        });
        out.push_str(&encode_some(rng, s));
    }
    if out.is_empty() {
        out.push('/');
    }
    if rng.random_bool(0.15) {
        let trail = ["/", "//", "%2F", "/%2F", "/./", "/.."];
        out.push_str(trail[rng.random_range(0..trail.len())]);
    }
    if rng.random_bool(0.2) {
        let f = if rng.random_bool(0.5) {
            FRONT_CONTROLLERS[rng.random_range(0..FRONT_CONTROLLERS.len())]
        } else {
            let odd = ["/index.phpx", "%2Findex.php", "/x/index.php", "/x.phpx"];
            odd[rng.random_range(0..odd.len())]
        };
        out = if rng.random_bool(0.1) && out.starts_with('/') {
            // Glued: `/index.phpapi/...`.
            format!("{f}{}", &out[1..])
        } else {
            format!("{f}{out}")
        };
    }
    if rng.random_bool(0.1) {
        let forms = [
            "http://example.org",
            "https://u@h:8443",
            "http:",
            "HTTP://H",
            "h:80",
        ];
        out = format!("{}{out}", forms[rng.random_range(0..forms.len())]);
    }
    if rng.random_bool(0.05) {
        out = out.trim_start_matches('/').to_owned();
    }
    if rng.random_bool(0.15) {
        let tails = ["?a=b", "?x=/download", "#frag", "?", "#/../x", "?_=1#a"];
        out.push_str(tails[rng.random_range(0..tails.len())]);
    }
    out.into_bytes()
}

/// Percent-encodes a random subset of the bytes of `s` (upper or lower hex).
pub fn encode_some(rng: &mut StdRng, s: &str) -> String {
    let all = rng.random_bool(0.05);
    let share = if rng.random_bool(0.2) { 0.3 } else { 0.0 };
    let mut out = String::new();
    for &b in s.as_bytes() {
        // Bytes that cannot appear raw in a path are always encoded.
        let must = !b.is_ascii_graphic() || matches!(b, b'%' | b'?' | b'#');
        if must || all || rng.random_bool(share) {
            if rng.random_bool(0.5) {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push_str(&format!("%{b:02x}"));
            }
        } else {
            out.push(char::from(b));
        }
    }
    out
}

pub fn flip_case(rng: &mut StdRng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if rng.random_bool(0.5) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Random bytes biased towards path syntax.
pub fn random_target(rng: &mut StdRng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"/",
        b"/",
        b"//",
        b"%",
        b"%2F",
        b"%2",
        b"%zz",
        b".",
        b"..",
        b"?",
        b"#",
        b"\\",
        b"api",
        b"v1",
        b"events",
        b"gallery",
        b"download",
        b"index.php",
        b"T0k3n",
        b"\xff",
        b"\x00",
        b"\n",
        b" ",
        b"+",
        b":",
        b"http://",
    ];
    let mut out = Vec::new();
    if rng.random_bool(0.8) {
        out.push(b'/');
    }
    for _ in 0..rng.random_range(0..16) {
        if rng.random_bool(0.15) {
            out.push(rng.random());
        } else {
            out.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())]);
        }
    }
    out
}

pub fn method(rng: &mut StdRng) -> String {
    let methods = [
        "GET", "GET", "GET", "HEAD", "POST", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "post",
        "put", "FOO",
    ];
    methods[rng.random_range(0..methods.len())].to_owned()
}

/// Front-controller prefixes: scripts, static files and folders a web server or `php -S` may
/// hand Laravel what follows of (the app in `tests/php/app` has `public/index.php`,
/// `public/sub/index.php`, `server.php`, `public/favicon.ico` and `public/robots.txt`), in the
/// spellings an attacker would try: encoded, in another case, with dot segments, doubled
/// slashes, path parameters, repeated.
pub const FRONT_CONTROLLERS: &[&str] = &[
    "/index.php",
    "/public/index.php",
    "/server.php",
    "/sub/index.php",
    "/public/sub/index.php",
    "/INDEX.PHP",
    "/PUBLIC/INDEX.PHP",
    "/public/INDEX.PHP",
    "/Server.php",
    "/%69ndex.php",
    "/index%2Ephp",
    "/index.ph%70",
    "/public%2Findex.php",
    "/public/index%2Ephp",
    "/public/index.ph%70",
    "/%70ublic/index.php",
    "/server%2Ephp",
    "/server.ph%70",
    "/sub%2Findex.php",
    "/a/b/c.php",
    "/x/index.php",
    "/x/../public/index.php",
    "/public/./index.php",
    "/public/x/../index.php",
    "/public/index.php/..",
    "//index.php/",
    "//public//index.php/",
    "/index.php;x",
    "/public/index.php;x",
    "/server.php;v=1",
    "/index.php%2F",
    "/index.php/index.php",
    "/public/index.php/public/index.php",
    "/public/index.php/index.php",
    "/server.php/index.php",
    "/favicon.ico",
    "/robots.txt",
    "/public/favicon.ico",
    "/favicon%2Eico",
    "/public",
    "/PUBLIC",
];

/// Guest and near-guest paths (with a fixed token) to put behind each front controller.
pub const FRONTED_PATHS: &[(&str, &str)] = &[
    ("GET", "/api/v1/gallery/Tok3n_fr0nt-42/download"),
    ("GET", "/api/v1/events/Tok3n_fr0nt-42/photos/7/download"),
    ("HEAD", "/gallery/Tok3n_fr0nt-42/download"),
    ("POST", "/api/v1/events/Tok3n_fr0nt-42/upload"),
    ("GET", "/api/v1/events/Tok3n_fr0nt-42"),
    ("GET", "/gallery/Tok3n_fr0nt-42/photos"),
    ("GET", "/api/v1/users/5"),
];

/// Every front controller in front of every fronted path, also glued to it where the prefix
/// ends in a script (`/index.phpapi/...`: Symfony cuts the script's name without a `/`).
pub fn fronted_targets() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for front in FRONT_CONTROLLERS {
        for (method, path) in FRONTED_PATHS {
            out.push((method.to_string(), format!("{front}{path}").into_bytes()));
            if front.to_ascii_lowercase().ends_with(".php") {
                out.push((
                    method.to_string(),
                    format!("{front}{}", &path[1..]).into_bytes(),
                ));
            }
        }
    }
    out
}

/// Targets that reach `/api/...` only through Symfony's byte count: when `php -S` finds no
/// script for a path that names the front controller `name` past its first byte, Symfony
/// cuts as many bytes as the script's path `script` (from the document root's parent on) is
/// long, whatever they are; also when the cut falls inside an escape.
pub fn cut_by_length(script: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let head = format!("/a/{name}/");
    let Some(pad) = script.len().checked_sub(head.len()) else {
        return out;
    };
    for (method, path) in FRONTED_PATHS {
        let rest = &path[1..];
        // The cut right before `/`, right before `api`, and after `%6` of `%61pi` (`api`).
        out.push((
            method.to_string(),
            format!("{head}{}{path}", "x".repeat(pad)).into_bytes(),
        ));
        out.push((
            method.to_string(),
            format!("{head}{}{rest}", "x".repeat(pad)).into_bytes(),
        ));
        if let Some(p) = pad.checked_sub(2) {
            out.push((
                method.to_string(),
                format!("{head}{}%6{rest}", "x".repeat(p)).into_bytes(),
            ));
        }
    }
    out
}
