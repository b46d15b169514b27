//! Classification: which route class (and which join token) a request belongs to.
//!
//! The classes are the `[[route]]` entries of the configuration, tried in order; the first whose
//! methods and one of whose path patterns match names the class. The shield must see a request
//! the way the Laravel app behind it will route it, or an attacker can slip a guest request past
//! the guest limits by spelling its path differently. So a path is tried in several spellings,
//! and the first spelling that matches any route decides:
//!
//! 1. **Laravel's own**: Symfony's path info (a leading `/index.php`, the front controller, is
//!    cut off, also when percent-encoded), trailing slashes trimmed *before* decoding, then
//!    percent-decoded exactly once like PHP's `rawurldecode` (`%2F` is a separator, invalid
//!    escapes stay literal, `+` stays `+`), matched case-sensitively with empty segments kept.
//!    Anything Laravel behind PHP-FPM routes to a guest route is classified here, with the same
//!    token.
//! 2. **Behind another front controller**: the same decoded path with a front-controller prefix
//!    cut off. Web servers and `php -S` (`artisan serve`) hand Laravel what follows a script
//!    (`/public/index.php/...`, `/server.php/...`, `/sub/index.php/...`), a static file
//!    (`/favicon.ico/...`: `php -S` names the file as the script) or the `public` folder (a
//!    document root one level up). So the rest after any segment that has a `.` in it, or is
//!    `public`, is tried. A path with `.php` anywhere in it is tried from *every* point after
//!    its first byte, escapes split included: when `php -S` finds no file, Symfony cuts as many
//!    bytes as the script's path is long (`/a/index.php/xxxx/api/...` reaches `/api/...`).
//! 3. **Normalised**: decoded once, then split on `/` and `\`, empty and `.` segments dropped,
//!    `..` resolved, every leading `index.php` cut off; matched case-sensitively, then with the
//!    front-controller cuts of 2. This is what Laravel would see behind a web server or browser
//!    that normalises paths.
//! 4. **Any case**: the same with literal segments compared ASCII-case-insensitively, so that
//!    case (a case-insensitive file system serves `/PUBLIC/INDEX.PHP`) cannot dodge a guest
//!    route either.
//!
//! Spellings 2 to 4 only ever add matches (over-including is safe; missing one is a bypass).
//! Methods are compared case-insensitively too, because Symfony upper-cases the method.
//!
//! Everything works on bytes: a clean path (no `%`, no empty or dot segment, no `\`, no
//! front controller) is matched in place and allocates nothing but the token it returns; one
//! without a `.` and a `public` segment pays nothing for spelling 2.

// A classifier that reads attacker bytes must not be able to panic: these lints prove there is
// no indexing, unwrap or panic outside the tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use http::Method;

use crate::policy::rules::ClassMask;

/// One `[[route]]` entry as validated config gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The route class name (`events`, `gallery`, ...), used by limits and switches.
    pub name: String,
    /// The methods this class covers; `None` covers every method.
    pub methods: Option<Vec<Method>>,
    /// Path patterns: literal segments, `{token}`, `*` (one segment) and `**` (any rest).
    pub paths: Vec<String>,
}

/// Index of a route class in the table (order of the config).
pub type ClassId = u16;

/// The result of classifying one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The first route class that matched, or `None` for a request outside every class.
    pub class: Option<ClassId>,
    /// The join token as Laravel would bind it (decoded, lossy UTF-8), when the matching
    /// pattern has `{token}`.
    pub token: Option<Box<str>>,
}

impl Classified {
    /// A request outside every route class.
    pub const NONE: Classified = Classified {
        class: None,
        token: None,
    };
}

/// Why a `[[route]]` entry or one of its path patterns cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The route lists no paths at all.
    #[error("route {route:?} has no paths: give it at least one, e.g. paths = [\"/api/v1/events/{{token}}\"]")]
    NoPaths {
        /// The route name.
        route: String,
    },
    /// The route lists an empty `methods` array, which would match nothing.
    #[error("route {route:?} lists no methods: list at least one, or leave `methods` out to match every method")]
    NoMethods {
        /// The route name.
        route: String,
    },
    /// More routes than a [`ClassId`] can number.
    #[error("too many routes ({count}): at most 65536 route classes are supported; merge some")]
    TooManyRoutes {
        /// How many routes were given.
        count: usize,
    },
    /// The pattern does not start with `/`.
    #[error("path {pattern:?} does not start with '/': write it as an absolute path, e.g. \"/{pattern}\"")]
    NotAbsolute {
        /// The bad pattern.
        pattern: String,
    },
    /// The pattern has `//` or a trailing `/` (ignored by Laravel, so never matchable).
    #[error(
        "path {pattern:?} has an empty segment ('//' or a trailing '/'): remove the extra slash"
    )]
    EmptySegment {
        /// The bad pattern.
        pattern: String,
    },
    /// The pattern has a `.` or `..` segment (resolved away before matching).
    #[error("path {pattern:?} has the dot segment {segment:?}: dot segments are resolved before matching; write the path without it")]
    DotSegment {
        /// The bad pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
    /// The pattern starts with `/index.php`, which is cut off before matching.
    #[error("path {pattern:?} starts with /index.php, the front controller, which is cut off before matching: write the path without it")]
    FrontController {
        /// The bad pattern.
        pattern: String,
    },
    /// The pattern has `{token}` more than once.
    #[error("path {pattern:?} has {{token}} more than once: a path captures one join token; use * for the other segments")]
    SecondToken {
        /// The bad pattern.
        pattern: String,
    },
    /// `**` is not the last segment.
    #[error("path {pattern:?} has '**' before its end: '**' matches the rest of the path, so it must be the last segment")]
    RestNotLast {
        /// The bad pattern.
        pattern: String,
    },
    /// A `{...}` other than `{token}`.
    #[error("path {pattern:?} has the placeholder {segment:?}: only {{token}} captures; use * for any other single segment")]
    UnknownPlaceholder {
        /// The bad pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
    /// A segment mixing literal text with `*`, `{` or `}`.
    #[error("path {pattern:?} has the segment {segment:?}, which mixes text with a wildcard: a segment is literal text, {{token}}, * or ** on its own")]
    MixedSegment {
        /// The bad pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
    /// A character that can never appear in a decoded path segment as written.
    #[error("path {pattern:?} has the character {ch:?}: '?', '#', '%' and '\\' cannot be matched; write the decoded path without query or fragment")]
    BadCharacter {
        /// The bad pattern.
        pattern: String,
        /// The offending character.
        ch: char,
    },
}

/// One segment of a compiled pattern.
#[derive(Debug, Clone)]
enum Seg {
    Lit(Box<[u8]>),
    Token,
    Star,
    Rest,
}

#[derive(Debug, Clone)]
struct Route {
    methods: Option<Box<[Method]>>,
    patterns: Box<[Box<[Seg]>]>,
}

/// The compiled `[[route]]` table: classifies requests into route classes.
#[derive(Debug, Clone)]
pub struct RouteTable {
    names: Vec<String>,
    routes: Vec<Route>,
    /// The distinct first segments of the patterns that begin with a literal: a front-controller
    /// cut is only matched where one of them (or, at a segment's start, a wildcard) can begin.
    first_literals: Vec<Box<[u8]>>,
    /// Some pattern begins with `{token}`, `*` or `**`.
    wildcard_first: bool,
    /// The methods a POST's method override can name that may route it elsewhere: each
    /// method the routes list (POST aside), and one that no route lists. Empty when no route
    /// lists methods (then the method never changes the class).
    override_methods: Box<[Method]>,
}

/// Which spelling of the path matched (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    Laravel,
    Normalised,
    NormalisedAnyCase,
}

/// A route and pattern that matched, with where the token lies in the matched buffer.
#[derive(Debug, Clone)]
struct Hit {
    route: usize,
    pattern: usize,
    token: Option<Range<usize>>,
}

/// The spelling that matched, the buffer it matched against (the path after its leading `/`,
/// from `start` on: a front-controller cut) and the hit.
struct Resolved<'a> {
    spelling: Spelling,
    buf: Cow<'a, [u8]>,
    start: usize,
    hit: Hit,
}

impl<'a> Resolved<'a> {
    fn new(spelling: Spelling, buf: Cow<'a, [u8]>, start: usize, hit: Hit) -> Self {
        Resolved {
            spelling,
            buf,
            start,
            hit,
        }
    }

    /// What the hit matched: the buffer from the cut on.
    fn after(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

const FRONT_CONTROLLER: &[u8] = b"index.php";

impl RouteTable {
    /// Compiles the routes, reporting every bad route and pattern at once as
    /// `(route index, path index, error)`; route-wide errors carry path index 0.
    pub fn new(specs: &[RouteSpec]) -> Result<RouteTable, Vec<(usize, usize, PatternError)>> {
        let mut errors = Vec::new();
        if specs.len() > usize::from(ClassId::MAX) + 1 {
            errors.push((0, 0, PatternError::TooManyRoutes { count: specs.len() }));
        }
        let mut routes = Vec::with_capacity(specs.len());
        for (ri, spec) in specs.iter().enumerate() {
            if spec.paths.is_empty() {
                errors.push((
                    ri,
                    0,
                    PatternError::NoPaths {
                        route: spec.name.clone(),
                    },
                ));
            }
            if spec.methods.as_ref().is_some_and(|m| m.is_empty()) {
                errors.push((
                    ri,
                    0,
                    PatternError::NoMethods {
                        route: spec.name.clone(),
                    },
                ));
            }
            let mut patterns = Vec::with_capacity(spec.paths.len());
            for (pi, path) in spec.paths.iter().enumerate() {
                match compile_pattern(path) {
                    Ok(p) => patterns.push(p),
                    Err(e) => errors.push((ri, pi, e)),
                }
            }
            routes.push(Route {
                methods: spec.methods.clone().map(Vec::into_boxed_slice),
                patterns: patterns.into_boxed_slice(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut first_literals: Vec<Box<[u8]>> = Vec::new();
        let mut wildcard_first = false;
        for segs in routes.iter().flat_map(|r| r.patterns.iter()) {
            match segs.first() {
                Some(Seg::Lit(lit)) if !first_literals.contains(lit) => {
                    first_literals.push(lit.clone());
                }
                Some(Seg::Lit(_)) | None => {}
                Some(_) => wildcard_first = true,
            }
        }
        let override_methods = override_methods(&routes);
        Ok(RouteTable {
            names: specs.iter().map(|s| s.name.clone()).collect(),
            routes,
            first_literals,
            wildcard_first,
            override_methods,
        })
    }

    /// The route classes a request may be routed to once Laravel applies a method override,
    /// and the classification under the first override that matches a class.
    ///
    /// Symfony routes a POST (in any letter case) by the method its `X-HTTP-Method-Override`
    /// header names, else by `_method` in the body (form or JSON: Laravel reads both) or the
    /// query. The shield does not read bodies before deciding, so a POST is taken to be routed
    /// by any method: the set holds the class of every method some route lists and of one that
    /// none lists. Empty for other methods, and when no route lists methods.
    pub fn override_classes(&self, method: &Method, path: &str) -> (ClassMask, Classified) {
        let mut mask = ClassMask::default();
        let mut first = None;
        if self.override_methods.is_empty() || !method.as_str().eq_ignore_ascii_case("POST") {
            return (mask, Classified::NONE);
        }
        let raw = cut_query(path.as_bytes());
        for m in self.override_methods.iter() {
            let Some(resolved) = self.resolve(m, raw) else {
                continue;
            };
            let Ok(class) = ClassId::try_from(resolved.hit.route) else {
                continue;
            };
            mask = mask.with(ClassMask::one(class));
            if first.is_none() {
                first = Some(self.classified(Some(resolved)));
            }
        }
        (mask, first.unwrap_or(Classified::NONE))
    }

    /// Whether some pattern can match `tail` at all, judged by its first segment only: a cheap
    /// test before trying the whole table at one of many cuts.
    fn may_begin(&self, tail: &[u8], any_case: bool, segment_start: bool) -> bool {
        (segment_start && self.wildcard_first)
            || self
                .first_literals
                .iter()
                .any(|lit| Segments::new(tail).eat(lit, any_case))
    }

    /// The route class names, indexed by [`ClassId`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `path` is the raw (not decoded) path of the request URI, as `http::Uri::path()` gives it
    /// (hyper already turned an absolute-form target into its path).
    pub fn classify(&self, method: &Method, path: &str) -> Classified {
        self.classified(self.resolve(method, cut_query(path.as_bytes())))
    }

    /// The same for a whole raw request target (origin-form, absolute-form `http://h/p?q`, `*`,
    /// anything): used by fuzzing and tests.
    pub fn classify_target(&self, method: &Method, target: &[u8]) -> Classified {
        self.classified(self.resolve(method, target_path(target)))
    }

    /// The canonical path of a classified target: the spelling that matched, re-encoded so that
    /// classifying it gives the same class and token (and so that canonicalising it again gives
    /// it back). `None` when the target is outside every class. Not for the hot path.
    pub fn canonical_path(&self, method: &Method, target: &[u8]) -> Option<String> {
        let r = self.resolve(method, target_path(target))?;
        let after: &[u8] = r.after();
        let mut out = String::with_capacity(after.len() + 16);
        match r.spelling {
            Spelling::Laravel => {
                // A pathinfo that itself starts with the front controller only arose because
                // one was cut off before it; keep one in front so it is cut off again.
                if after.starts_with(FRONT_CONTROLLER) {
                    out.push_str("/index.php");
                }
                out.push('/');
                // Trailing separators would be trimmed by Laravel before decoding: encode them.
                let keep = after.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
                let (body, tail) = after.split_at(keep);
                encode_into(&mut out, body, true);
                for _ in tail {
                    out.push_str("%2F");
                }
            }
            Spelling::Normalised | Spelling::NormalisedAnyCase => {
                let segs = self
                    .routes
                    .get(r.hit.route)
                    .and_then(|route| route.patterns.get(r.hit.pattern))?;
                let mut parts = Segments::new(after);
                for seg in segs.iter() {
                    match seg {
                        Seg::Lit(lit) => {
                            parts.next()?;
                            out.push('/');
                            // The configured spelling, so a re-classification matches it
                            // case-sensitively (first spelling) and picks the same route.
                            encode_into(&mut out, lit, false);
                        }
                        Seg::Token | Seg::Star => {
                            let p = parts.next()?;
                            out.push('/');
                            encode_into(&mut out, after.get(p).unwrap_or_default(), false);
                        }
                        Seg::Rest => {
                            for p in parts.by_ref() {
                                out.push('/');
                                encode_into(&mut out, after.get(p).unwrap_or_default(), false);
                            }
                        }
                    }
                }
            }
        }
        Some(out)
    }

    fn classified(&self, resolved: Option<Resolved<'_>>) -> Classified {
        let Some(r) = resolved else {
            return Classified::NONE;
        };
        let token = r
            .hit
            .token
            .clone()
            .and_then(|range| r.after().get(range))
            .map(|t| String::from_utf8_lossy(t).into_owned().into_boxed_str());
        Classified {
            class: ClassId::try_from(r.hit.route).ok(),
            token,
        }
    }

    /// Tries the spellings in order; the first that matches any route decides.
    fn resolve<'a>(&self, method: &Method, raw: &'a [u8]) -> Option<Resolved<'a>> {
        let exact = laravel_path(raw);
        if let Some(hit) = self.first_match(method, &exact, false, false) {
            return Some(Resolved::new(Spelling::Laravel, exact, 0, hit));
        }
        if is_clean(raw) {
            // Normalising a clean path changes nothing (and `exact` is all of it: no front
            // controller was cut): only other front controllers and case are left to try.
            let marks = Marks::of(&exact);
            if let Some((start, hit)) = self.cut_match(method, &exact, marks, false) {
                return Some(Resolved::new(Spelling::Laravel, exact, start, hit));
            }
            if let Some(hit) = self.first_match(method, &exact, true, false) {
                return Some(Resolved::new(Spelling::NormalisedAnyCase, exact, 0, hit));
            }
            return self
                .cut_match(method, &exact, marks, true)
                .map(|(start, hit)| Resolved::new(Spelling::NormalisedAnyCase, exact, start, hit));
        }
        drop(exact);
        let decoded = match self.cut_match_raw(method, raw) {
            Ok(resolved) => return Some(resolved),
            Err(decoded) => decoded,
        };
        let (normal, cut_scripts) = normalised_path(raw);
        let mut marks = Marks::of(&normal);
        // A script cut off in front (`index.php;x/...` leaves `;x/...`) still marks the path.
        marks.php |= cut_scripts;
        // Normalising may have changed nothing: then its cuts were all tried already.
        let same = decoded.get(1..) == Some(&normal[..]);
        let found = self
            .first_match(method, &normal, false, false)
            .map(|hit| (Spelling::Normalised, 0, hit))
            .or_else(|| {
                if same {
                    return None;
                }
                self.cut_match(method, &normal, marks, false)
                    .map(|(start, hit)| (Spelling::Normalised, start, hit))
            })
            .or_else(|| {
                self.first_match(method, &normal, true, false)
                    .map(|hit| (Spelling::NormalisedAnyCase, 0, hit))
            })
            .or_else(|| {
                self.cut_match(method, &normal, marks, true)
                    .map(|(start, hit)| (Spelling::NormalisedAnyCase, start, hit))
            });
        found.map(|(spelling, start, hit)| Resolved::new(spelling, Cow::Owned(normal), start, hit))
    }

    /// Spelling 2 on a path that is not clean: the whole path decoded like Laravel decodes it
    /// (no front controller cut), tried after every front controller it may hold; for a path
    /// with `.php`, also cut inside each escape (`%4|1`, `%|41`), which Symfony's byte count
    /// can do. Without a match, the decoded path after one spare byte (empty when there was
    /// nothing to try).
    fn cut_match_raw(&self, method: &Method, raw: &[u8]) -> Result<Resolved<'static>, Vec<u8>> {
        if !raw.contains(&b'%') && !Marks::of(raw).any() {
            // Nothing to decode and no front controller: nothing to cut.
            return Err(Vec::new());
        }
        let body = raw.strip_prefix(b"/").unwrap_or(raw);
        let keep = body.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
        let trimmed = body.get(..keep).unwrap_or_default();
        // One spare byte in front, so that a cut before an escape's first hex digit has room
        // for both digits; the decoded path starts at 1.
        let mut buf = Vec::with_capacity(trimmed.len() + 1);
        buf.push(0);
        let mut escapes = Vec::new();
        let mut rest = trimmed;
        while let Some((b, len)) = decode_one(rest) {
            if len == 3 {
                if let [_, h, l, ..] = rest {
                    escapes.push((buf.len(), *h, *l));
                }
            }
            buf.push(b);
            rest = rest.get(len..).unwrap_or_default();
        }
        let decoded = buf.get(1..).unwrap_or_default();
        let marks = Marks::of(decoded);
        if let Some((start, hit)) = self.cut_match(method, decoded, marks, false) {
            return Ok(Resolved::new(
                Spelling::Laravel,
                Cow::Owned(buf),
                start + 1,
                hit,
            ));
        }
        if !marks.php {
            return Err(buf);
        }
        for (at, hi, lo) in escapes {
            if at > MAX_CUT {
                break;
            }
            // `at` is at least 1: the spare byte is in front.
            let (Some(&prev), Some(&this)) = (buf.get(at - 1), buf.get(at)) else {
                break;
            };
            let saved = [prev, this];
            // Cut after `%h`: the rest is the low digit, then the decoded tail; cut after `%`:
            // both digits, then the tail.
            for (start, head) in [(at, &[lo][..]), (at - 1, &[hi, lo][..])] {
                if let Some(dst) = buf.get_mut(start..=at) {
                    dst.copy_from_slice(head);
                }
                let tail = buf.get(start..).unwrap_or_default();
                if self.may_begin(tail, false, false)
                    && self.first_match(method, tail, false, true).is_some()
                {
                    if let Some(hit) = self.first_match(method, tail, false, false) {
                        return Ok(Resolved::new(
                            Spelling::Laravel,
                            Cow::Owned(buf),
                            start,
                            hit,
                        ));
                    }
                }
                if let Some(dst) = buf.get_mut(at - 1..=at) {
                    dst.copy_from_slice(&saved);
                }
            }
        }
        Err(buf)
    }

    /// The first route that matches `buf` after a front-controller cut (see spelling 2 of the
    /// module docs), leftmost cut first: where the rest starts and the hit.
    fn cut_match(
        &self,
        method: &Method,
        buf: &[u8],
        marks: Marks,
        any_case: bool,
    ) -> Option<(usize, Hit)> {
        // Cuts up to here are all tried already.
        let mut tried = 0;
        if marks.php {
            // Every point after the first byte. A cut inside a segment can only begin a literal
            // (the others are tried from the segment's start, which binds the longest token).
            tried = buf.len().min(MAX_CUT);
            for start in 1..=tried {
                let tail = buf.get(start..).unwrap_or_default();
                if tail.first() == Some(&b'/') {
                    continue;
                }
                let mid_segment = buf.get(start - 1) != Some(&b'/');
                if self.may_begin(tail, any_case, !mid_segment)
                    && self
                        .first_match(method, tail, any_case, mid_segment)
                        .is_some()
                {
                    // The full table decides which route (a wildcard-first one may come first).
                    return self
                        .first_match(method, tail, any_case, false)
                        .map(|hit| (start, hit));
                }
            }
        }
        if !marks.segment {
            return None;
        }
        let mut from = 0;
        for seg in buf.split(|&b| b == b'/') {
            let start = from + seg.len() + 1;
            from = start;
            if start <= tried || start > buf.len() || !is_front_segment(seg) {
                continue;
            }
            let tail = buf.get(start..).unwrap_or_default();
            if let Some(hit) = self.first_match(method, tail, any_case, false) {
                return Some((start, hit));
            }
        }
        None
    }

    /// The first route whose methods and a pattern match. `literal_first` only tries patterns
    /// that begin with a literal segment.
    fn first_match(
        &self,
        method: &Method,
        after: &[u8],
        any_case: bool,
        literal_first: bool,
    ) -> Option<Hit> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, route)| method_matches(route.methods.as_deref(), method))
            .find_map(|(ri, route)| {
                route.patterns.iter().enumerate().find_map(|(pi, segs)| {
                    if literal_first && !matches!(segs.first(), Some(Seg::Lit(_))) {
                        return None;
                    }
                    match_pattern(segs, after, any_case).map(|token| Hit {
                        route: ri,
                        pattern: pi,
                        token,
                    })
                })
            })
    }
}

/// How far into a path a cut anywhere may go: Symfony's byte count is the length of the
/// script's path, far below this in any real install; it bounds the work on a hostile path.
/// (Past it, cuts are still tried after each front-controller segment.)
const MAX_CUT: usize = 1024;

/// What a decoded path holds that can make a front controller.
#[derive(Debug, Clone, Copy)]
struct Marks {
    /// `.php` anywhere (any case): cut anywhere.
    php: bool,
    /// A segment with a `.` (a script or a static file) or named `public`: cut after it.
    segment: bool,
}

impl Marks {
    fn of(buf: &[u8]) -> Marks {
        let mut marks = Marks {
            php: false,
            segment: false,
        };
        for dot in memchr::memchr_iter(b'.', buf) {
            marks.segment = true;
            if buf
                .get(dot + 1..dot + 4)
                .is_some_and(|ext| ext.eq_ignore_ascii_case(b"php"))
            {
                marks.php = true;
                return marks;
            }
        }
        if !marks.segment {
            marks.segment = buf.split(|&b| b == b'/').any(is_front_segment);
        }
        marks
    }

    fn any(self) -> bool {
        self.php || self.segment
    }
}

/// See [`RouteTable::override_methods`].
fn override_methods(routes: &[Route]) -> Box<[Method]> {
    let mut out: Vec<Method> = Vec::new();
    let mut listed = false;
    for m in routes.iter().filter_map(|r| r.methods.as_deref()).flatten() {
        listed = true;
        let upper = m.as_str().to_ascii_uppercase();
        if upper == "POST" || out.iter().any(|o| o.as_str() == upper) {
            continue;
        }
        if let Ok(m) = Method::from_bytes(upper.as_bytes()) {
            out.push(m);
        }
    }
    // Any method no route lists: it reaches exactly the routes that list none.
    let unlisted = Method::from_bytes(b"JOINSHIELD-UNLISTED").ok();
    if let Some(u) = unlisted.filter(|u| listed && !out.contains(u)) {
        out.push(u);
    }
    out.into_boxed_slice()
}

/// A segment after which Laravel may be reached: a file name (it has a `.`: a script, or a
/// static file `php -S` runs the router for) or the `public` folder, in any case.
fn is_front_segment(seg: &[u8]) -> bool {
    seg.contains(&b'.') || seg.eq_ignore_ascii_case(b"public")
}

/// Laravel lists HEAD with every GET route, and Symfony upper-cases the request method.
fn method_matches(allowed: Option<&[Method]>, method: &Method) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    let m = method.as_str();
    allowed.iter().any(|a| {
        a.as_str().eq_ignore_ascii_case(m) || (*a == Method::GET && m.eq_ignore_ascii_case("HEAD"))
    })
}

/// Matches one pattern against a path (given without its leading `/`); returns the token's
/// byte range (if the pattern has one) on a match.
fn match_pattern(segs: &[Seg], after: &[u8], any_case: bool) -> Option<Option<Range<usize>>> {
    let mut parts = Segments::new(after);
    let mut token = None;
    for seg in segs {
        match seg {
            Seg::Lit(lit) => {
                if !parts.eat(lit, any_case) {
                    return None;
                }
            }
            Seg::Token => {
                let p = parts.next()?;
                if p.is_empty() {
                    return None;
                }
                token = Some(p);
            }
            Seg::Star => {
                if parts.next()?.is_empty() {
                    return None;
                }
            }
            // Laravel's `/{any}` with `.*`: a separator, then anything (even nothing).
            Seg::Rest => return parts.next().map(|_| token),
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(token)
}

/// The `/`-separated segments of a path given without its leading `/`, as byte ranges.
/// `""` is one empty segment (the root), as Laravel's regexes see `/`.
struct Segments<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Segments<'a> {
    fn new(s: &'a [u8]) -> Self {
        Segments {
            s,
            pos: 0,
            done: false,
        }
    }

    /// Takes the next segment if it is `lit`: the same as comparing `next()`, without first
    /// searching the whole segment for its end (a mismatch costs the bytes compared).
    fn eat(&mut self, lit: &[u8], any_case: bool) -> bool {
        if self.done {
            return false;
        }
        let Some(rest) = self.s.get(self.pos..) else {
            return false;
        };
        let same = rest.get(..lit.len()).is_some_and(|head| {
            if any_case {
                head.eq_ignore_ascii_case(lit)
            } else {
                head == lit
            }
        });
        if !same {
            return false;
        }
        match rest.get(lit.len()) {
            None => {
                self.done = true;
                true
            }
            Some(b'/') => {
                self.pos += lit.len() + 1;
                true
            }
            Some(_) => false,
        }
    }
}

impl Iterator for Segments<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let rest = self.s.get(start..)?;
        match rest.iter().position(|&b| b == b'/') {
            Some(i) => {
                self.pos = start + i + 1;
                Some(start..start + i)
            }
            None => {
                self.done = true;
                Some(start..self.s.len())
            }
        }
    }
}

/// The path of a raw request target, as Symfony takes it from `REQUEST_URI`: origin-form up to
/// `?`/`#`; for anything else the path PHP's `parse_url` finds (`http://h/p`, `http:/p`,
/// `h:80/p`), or the target itself (Symfony then prefixes a `/`).
fn target_path(target: &[u8]) -> &[u8] {
    if target.first() == Some(&b'/') {
        return cut_query(target);
    }
    let target = cut_query(target);
    let Some(colon) = target.iter().position(|&b| b == b':') else {
        return target;
    };
    let (scheme, rest) = target.split_at(colon);
    let rest = rest.get(1..).unwrap_or_default();
    if scheme.is_empty()
        || !scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return target;
    }
    if let Some(authority_and_path) = rest.strip_prefix(b"//") {
        // Absolute-form: the path starts at the first `/` after the authority; none is `/`.
        return match authority_and_path.iter().position(|&b| b == b'/') {
            Some(i) => authority_and_path.get(i..).unwrap_or(b"/"),
            None => b"/",
        };
    }
    // `host:port/path`: parse_url reads digits after the colon as a port.
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && matches!(rest.get(digits), None | Some(b'/')) {
        return rest.get(digits..).unwrap_or_default();
    }
    rest
}

/// Everything before the first `?` or `#`.
fn cut_query(raw: &[u8]) -> &[u8] {
    match raw.iter().position(|&b| b == b'?' || b == b'#') {
        Some(i) => raw.get(..i).unwrap_or(raw),
        None => raw,
    }
}

/// The path as Laravel matches it, without its leading `/`: Symfony's path info (front
/// controller cut off), trailing slashes trimmed, then decoded once.
fn laravel_path(raw: &[u8]) -> Cow<'_, [u8]> {
    // Symfony prefixes a `/` to a request URI that lacks one.
    let body = raw.strip_prefix(b"/").unwrap_or(raw);
    // `/index.php` counts as the front controller when it *decodes* to it, and is cut off even
    // when no `/` follows (`/index.phpapi/...` routes as `/api/...`).
    let after = match strip_encoded_prefix(body, FRONT_CONTROLLER) {
        Some(rest) => rest.strip_prefix(b"/").unwrap_or(rest),
        None => body,
    };
    let keep = after.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let trimmed = after.get(..keep).unwrap_or_default();
    raw_url_decode(trimmed)
}

/// If `s` decodes (escape by escape) to something starting with `prefix`, the rest of `s`.
fn strip_encoded_prefix<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let mut rest = s;
    for &want in prefix {
        let (got, len) = decode_one(rest)?;
        if got != want {
            return None;
        }
        rest = rest.get(len..)?;
    }
    Some(rest)
}

/// The first byte of `s` as decoded, and how many raw bytes it took.
fn decode_one(s: &[u8]) -> Option<(u8, usize)> {
    let (&first, rest) = s.split_first()?;
    if first == b'%' {
        if let [h, l, ..] = rest {
            if let (Some(h), Some(l)) = (hex(*h), hex(*l)) {
                return Some((h << 4 | l, 3));
            }
        }
    }
    Some((first, 1))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// PHP's `rawurldecode`: `%XX` decoded, anything else (a bad escape, `+`) kept as it is.
fn raw_url_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some((b, len)) = decode_one(rest) {
        out.push(b);
        rest = rest.get(len..).unwrap_or_default();
    }
    Cow::Owned(out)
}

/// True when normalising `raw` would not change its segments: no escape, no `\`, no empty or
/// dot segment, and no front controller in front.
fn is_clean(raw: &[u8]) -> bool {
    let Some(body) = raw.strip_prefix(b"/") else {
        return false;
    };
    if body.is_empty() {
        return true;
    }
    if body.len() >= FRONT_CONTROLLER.len()
        && body
            .get(..FRONT_CONTROLLER.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(FRONT_CONTROLLER))
    {
        return false;
    }
    body.split(|&b| b == b'/').all(|seg| {
        !seg.is_empty()
            && seg != b"."
            && seg != b".."
            && !seg.iter().any(|&b| b == b'%' || b == b'\\')
    })
}

/// The normalised spelling, without its leading `/`: decoded once, split on `/` and `\`, empty
/// and `.` segments dropped, `..` resolved, then every leading `index.php` cut off (and whether
/// one was).
fn normalised_path(raw: &[u8]) -> (Vec<u8>, bool) {
    let decoded = raw_url_decode(raw);
    let mut out: Vec<u8> = Vec::with_capacity(decoded.len());
    // Where each kept segment began (its separator included), so `..` can drop it.
    let mut starts: Vec<usize> = Vec::new();
    for seg in decoded.split(|&b| b == b'/' || b == b'\\') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if let Some(start) = starts.pop() {
                    out.truncate(start);
                }
            }
            _ => {
                starts.push(out.len());
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(seg);
            }
        }
    }
    // A front controller may be repeated, or glued to the next segment (`index.phpapi`).
    let mut cut = 0;
    while let Some(rest) = out.get(cut..) {
        let Some(head) = rest.get(..FRONT_CONTROLLER.len()) else {
            break;
        };
        if !head.eq_ignore_ascii_case(FRONT_CONTROLLER) {
            break;
        }
        cut += FRONT_CONTROLLER.len();
        if out.get(cut) == Some(&b'/') {
            cut += 1;
        }
    }
    out.drain(..cut.min(out.len()));
    (out, cut > 0)
}

/// Percent-encodes a decoded path piece so that decoding gives it back and no byte in it reads
/// as a separator, query, fragment or escape. `keep_slash` leaves `/` as a separator.
fn encode_into(out: &mut String, bytes: &[u8], keep_slash: bool) {
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
            || (keep_slash && b == b'/');
        if plain {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Compiles one path pattern into segments.
fn compile_pattern(pattern: &str) -> Result<Box<[Seg]>, PatternError> {
    let owned = || pattern.to_owned();
    let Some(body) = pattern.strip_prefix('/') else {
        return Err(PatternError::NotAbsolute { pattern: owned() });
    };
    if let Some(ch) = pattern
        .chars()
        .find(|c| matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(PatternError::BadCharacter {
            pattern: owned(),
            ch,
        });
    }
    if body.is_empty() {
        // `/`: the root, which Laravel sees as one empty segment.
        return Ok(Box::new([Seg::Lit(Box::default())]));
    }
    if body
        .get(..FRONT_CONTROLLER.len())
        .is_some_and(|p| p.eq_ignore_ascii_case("index.php"))
    {
        return Err(PatternError::FrontController { pattern: owned() });
    }
    let parts: Vec<&str> = body.split('/').collect();
    let mut segs = Vec::with_capacity(parts.len());
    let mut has_token = false;
    for (i, part) in parts.iter().enumerate() {
        let seg = match *part {
            "" => return Err(PatternError::EmptySegment { pattern: owned() }),
            "." | ".." => {
                return Err(PatternError::DotSegment {
                    pattern: owned(),
                    segment: (*part).to_owned(),
                })
            }
            "{token}" => {
                if has_token {
                    return Err(PatternError::SecondToken { pattern: owned() });
                }
                has_token = true;
                Seg::Token
            }
            "*" => Seg::Star,
            "**" => {
                if i + 1 != parts.len() {
                    return Err(PatternError::RestNotLast { pattern: owned() });
                }
                Seg::Rest
            }
            p if p.starts_with('{') && p.ends_with('}') => {
                return Err(PatternError::UnknownPlaceholder {
                    pattern: owned(),
                    segment: p.to_owned(),
                })
            }
            p if p.contains(['{', '}', '*']) => {
                return Err(PatternError::MixedSegment {
                    pattern: owned(),
                    segment: p.to_owned(),
                })
            }
            p => Seg::Lit(p.as_bytes().into()),
        };
        segs.push(seg);
    }
    Ok(segs.into_boxed_slice())
}

/// The four route classes of the shipped configuration (SPEC section 2), for config defaults
/// and tests.
#[doc(hidden)]
pub fn default_specs() -> Vec<RouteSpec> {
    let spec = |name: &str, methods: Option<Vec<Method>>, paths: &[&str]| RouteSpec {
        name: name.to_owned(),
        methods,
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    };
    vec![
        spec(
            "gallery_download",
            None,
            &[
                "/api/v1/gallery/{token}/download",
                "/api/v1/gallery/{token}/photos/*/download",
                "/api/v1/events/{token}/photos/*/download",
                "/gallery/{token}/download",
            ],
        ),
        spec(
            "upload",
            Some(vec![Method::POST, Method::PUT]),
            &[
                "/api/v1/events/{token}/upload",
                "/api/v1/events/{token}/photos",
            ],
        ),
        spec(
            "events",
            None,
            &["/api/v1/events/{token}", "/api/v1/events/{token}/**"],
        ),
        spec(
            "gallery",
            None,
            &[
                "/api/v1/gallery/{token}",
                "/api/v1/gallery/{token}/**",
                "/gallery/{token}",
                "/gallery/{token}/**",
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::new(&default_specs()).expect("the default routes compile")
    }

    /// The class name and token the default table gives `target` for `method`.
    fn class_of(method: &str, target: &str) -> (Option<String>, Option<String>) {
        let t = table();
        let m = Method::from_bytes(method.as_bytes()).expect("a valid method");
        let c = t.classify_target(&m, target.as_bytes());
        (
            c.class.map(|i| t.names()[usize::from(i)].clone()),
            c.token.map(String::from),
        )
    }

    fn is(class: &str, token: &str) -> (Option<String>, Option<String>) {
        (Some(class.to_owned()), Some(token.to_owned()))
    }

    fn none() -> (Option<String>, Option<String>) {
        (None, None)
    }

    #[test]
    fn default_routes_classify_their_own_paths() {
        assert_eq!(
            class_of("GET", "/api/v1/events/abc123"),
            is("events", "abc123")
        );
        assert_eq!(
            class_of("GET", "/api/v1/events/abc123/photos"),
            is("events", "abc123")
        );
        assert_eq!(
            class_of("POST", "/api/v1/events/abc123/photos"),
            is("upload", "abc123")
        );
        assert_eq!(
            class_of("PUT", "/api/v1/events/abc123/upload"),
            is("upload", "abc123")
        );
        assert_eq!(
            class_of("GET", "/api/v1/gallery/abc123"),
            is("gallery", "abc123")
        );
        assert_eq!(
            class_of("GET", "/api/v1/gallery/abc123/download"),
            is("gallery_download", "abc123")
        );
        assert_eq!(
            class_of("GET", "/api/v1/events/abc123/photos/7/download"),
            is("gallery_download", "abc123")
        );
        assert_eq!(
            class_of("GET", "/gallery/abc123/x/y"),
            is("gallery", "abc123")
        );
    }

    fn mask_names(t: &RouteTable, mask: ClassMask) -> Vec<&str> {
        mask.iter()
            .filter_map(|c| t.names().get(usize::from(c)).map(String::as_str))
            .collect()
    }

    #[test]
    fn a_post_names_every_class_a_method_override_could_route_it_to() {
        let t = table();
        // By its method an upload; with `_method=GET` (or the header) Laravel shows the photos.
        let (mask, _) = t.override_classes(&Method::POST, "/api/v1/events/T/photos");
        assert_eq!(mask_names(&t, mask), ["upload", "events"]);
        // Symfony upper-cases the method before it looks for an override.
        let post = Method::from_bytes(b"post").unwrap();
        let (lower, _) = t.override_classes(&post, "/api/v1/events/T/photos?x=1");
        assert_eq!(lower, mask);
        // Only a POST is overridden; off guest routes there is nothing to reach.
        for m in [Method::GET, Method::PUT, Method::PATCH] {
            let (other, _) = t.override_classes(&m, "/api/v1/events/T/photos");
            assert!(other.is_empty(), "{m}");
        }
        let (none, first) = t.override_classes(&Method::POST, "/api/v1/users/5");
        assert!(none.is_empty());
        assert_eq!(first, Classified::NONE);
    }

    #[test]
    fn a_post_to_a_route_of_other_methods_is_classified_by_the_override() {
        let t = RouteTable::new(&[
            RouteSpec {
                name: "download".into(),
                methods: Some(vec![Method::GET]),
                paths: vec!["/d/{token}".into()],
            },
            RouteSpec {
                name: "upload".into(),
                methods: Some(vec![Method::POST]),
                paths: vec!["/u/{token}".into()],
            },
        ])
        .unwrap();
        assert_eq!(t.classify(&Method::POST, "/d/T"), Classified::NONE);
        let (mask, first) = t.override_classes(&Method::POST, "/index.php/d/T%20");
        assert_eq!(mask_names(&t, mask), ["download"]);
        assert_eq!(first.class, Some(0));
        assert_eq!(first.token.as_deref(), Some("T "));
        // A POST route is reached by POST itself; no override leads elsewhere.
        let (mask, _) = t.override_classes(&Method::POST, "/u/T");
        assert!(mask.is_empty());
    }

    #[test]
    fn without_methods_in_any_route_an_override_changes_nothing() {
        let t = RouteTable::new(&[RouteSpec {
            name: "any".into(),
            methods: None,
            paths: vec!["/a/{token}".into()],
        }])
        .unwrap();
        let (mask, _) = t.override_classes(&Method::POST, "/a/T");
        assert!(mask.is_empty());
    }

    #[test]
    fn the_first_matching_route_wins() {
        // `/api/v1/gallery/{token}/**` would match too, but gallery_download comes first.
        assert_eq!(
            class_of("GET", "/api/v1/gallery/T/photos/9/download"),
            is("gallery_download", "T")
        );
    }

    #[test]
    fn sibling_paths_are_not_guest_routes() {
        assert_eq!(class_of("GET", "/api/v1/events"), none());
        assert_eq!(class_of("GET", "/api/v1/eventsX/T"), none());
        assert_eq!(class_of("GET", "/api/v2/events/T"), none());
        assert_eq!(class_of("GET", "/api/v1/users/5"), none());
        assert_eq!(class_of("GET", "/"), none());
        assert_eq!(class_of("GET", "*"), none());
    }

    #[test]
    fn methods_limit_a_route_and_head_follows_get() {
        assert_eq!(
            class_of("GET", "/api/v1/events/T/upload"),
            is("events", "T")
        );
        assert_eq!(
            class_of("PATCH", "/api/v1/events/T/upload"),
            is("events", "T")
        );
        let specs = vec![RouteSpec {
            name: "read".into(),
            methods: Some(vec![Method::GET]),
            paths: vec!["/r/{token}".into()],
        }];
        let t = RouteTable::new(&specs).unwrap();
        assert_eq!(t.classify(&Method::HEAD, "/r/x").class, Some(0));
        assert_eq!(t.classify(&Method::POST, "/r/x").class, None);
    }

    #[test]
    fn lowercase_methods_match_like_symfony_upper_cases_them() {
        assert_eq!(
            class_of("post", "/api/v1/events/T/photos"),
            is("upload", "T")
        );
    }

    #[test]
    fn percent_encoded_slash_is_a_separator() {
        assert_eq!(class_of("GET", "/api/v1/events%2FT"), is("events", "T"));
        assert_eq!(
            class_of("GET", "/api%2fv1%2Fgallery%2FT%2Fdownload"),
            is("gallery_download", "T")
        );
    }

    #[test]
    fn token_is_decoded_exactly_once() {
        assert_eq!(
            class_of("GET", "/api/v1/events/a%2541"),
            is("events", "a%41")
        );
        assert_eq!(class_of("GET", "/api/v1/events/a%20b"), is("events", "a b"));
    }

    #[test]
    fn invalid_escapes_and_plus_stay_literal() {
        assert_eq!(
            class_of("GET", "/api/v1/events/a%zz%4"),
            is("events", "a%zz%4")
        );
        assert_eq!(class_of("GET", "/api/v1/events/a+b"), is("events", "a+b"));
    }

    #[test]
    fn index_php_front_controller_is_stripped() {
        assert_eq!(
            class_of("GET", "/index.php/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/%69ndex%2Ephp/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/index.php/index.php/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/INDEX.PHP/api/v1/events/T"),
            is("events", "T")
        );
    }

    #[test]
    fn index_php_glued_to_the_path_is_still_the_front_controller() {
        // Symfony cuts the base URL `/index.php` even when no `/` follows it.
        assert_eq!(
            class_of("GET", "/index.phpapi/v1/events/T"),
            is("events", "T")
        );
    }

    #[test]
    fn a_script_in_the_public_folder_is_a_front_controller() {
        // A document root one level up: the web server runs public/index.php for the rest.
        assert_eq!(
            class_of("GET", "/public/index.php/api/v1/gallery/T/download"),
            is("gallery_download", "T")
        );
        // `php artisan serve` runs server.php for paths below it.
        assert_eq!(
            class_of("GET", "/server.php/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/sub/index.php/gallery/T"),
            is("gallery", "T")
        );
        assert_eq!(
            class_of("GET", "/a/b/c.php/api/v1/events/T/photos"),
            is("events", "T")
        );
    }

    #[test]
    fn an_encoded_front_controller_is_still_one() {
        for target in [
            "/public%2Findex.php/api/v1/events/T",
            "/public/index%2Ephp/api/v1/events/T",
            "/public/index.ph%70/api/v1/events/T",
            "/server%2ephp/api/v1/events/T",
            "/%70ublic/index.php/api/v1/events/T",
            "/index.php%2Fapi/v1/events/T",
        ] {
            assert_eq!(class_of("GET", target), is("events", "T"), "{target}");
        }
    }

    #[test]
    fn front_controllers_in_any_case_are_front_controllers() {
        // A case-insensitive file system serves /PUBLIC/INDEX.PHP as public/index.php.
        assert_eq!(
            class_of("GET", "/PUBLIC/INDEX.PHP/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/Server.PHP/gallery/T/download"),
            is("gallery_download", "T")
        );
    }

    #[test]
    fn dot_segments_and_slashes_around_a_front_controller_cannot_dodge() {
        for target in [
            "/x/../public/index.php/api/v1/events/T",
            "/public/./index.php/api/v1/events/T",
            "/public/index.php/../api/v1/events/T",
            "//public//index.php//api/v1/events/T",
            "//index.php//api/v1/events/T",
            "/public/index.php/index.php/api/v1/events/T",
            "/server.php/public/index.php/api/v1/events/T",
        ] {
            assert_eq!(class_of("GET", target), is("events", "T"), "{target}");
        }
    }

    #[test]
    fn a_path_parameter_on_a_front_controller_cannot_dodge() {
        // No server here cuts `;x` off, but a path with `.php` in it is tried from every point.
        assert_eq!(
            class_of("GET", "/index.php;x/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/public/index.php;v=1/gallery/T"),
            is("gallery", "T")
        );
    }

    #[test]
    fn a_static_file_or_the_public_folder_is_a_front_controller() {
        // php -S names an existing file as the script and runs the router for what follows.
        assert_eq!(
            class_of("GET", "/favicon.ico/api/v1/gallery/T/download"),
            is("gallery_download", "T")
        );
        assert_eq!(
            class_of("GET", "/css/app.css/gallery/T"),
            is("gallery", "T")
        );
        assert_eq!(
            class_of("GET", "/favicon%2Eico/api/v1/events/T"),
            is("events", "T")
        );
        // php -S serves a folder with an index.php through it.
        assert_eq!(
            class_of("GET", "/public/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/PUBLIC/api/v1/events/T"),
            is("events", "T")
        );
    }

    #[test]
    fn symfony_cutting_by_length_cannot_dodge() {
        // When php -S finds no script, Symfony cuts as many bytes as the script path is long
        // (here `/public/index.php`, 17): `/a/index.php/xxxx` and `/a/index.php/xxxxapi` both
        // leave `/api/...`.
        assert_eq!(
            class_of("GET", "/a/index.php/xxxx/api/v1/events/T"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "/a/index.php/xxxxxapi/v1/events/T"),
            is("events", "T")
        );
        // The cut may fall inside an escape: `%4a` decodes to `J`, but a cut after `%4` leaves
        // `api/...`.
        assert_eq!(
            class_of("GET", "/a/index.php/xxx%4api/v1/events/T"),
            is("events", "T")
        );
        // A cut after the `%` leaves both hex digits: `%ab` can begin a route `/ab/...`.
        let specs = vec![RouteSpec {
            name: "ab".into(),
            methods: None,
            paths: vec!["/ab/{token}".into()],
        }];
        let t = RouteTable::new(&specs).unwrap();
        let got = t.classify_target(&Method::GET, b"/index.php/y%ab/T");
        assert_eq!((got.class, got.token.as_deref()), (Some(0), Some("T")));
        // The script may come after the cut, too.
        assert_eq!(
            class_of("GET", "/xxxxxxxxxxxxxxxx/api/v1/events/T/index.php"),
            is("events", "T")
        );
    }

    #[test]
    fn laravels_own_route_comes_before_a_front_controller_cut() {
        // Behind PHP-FPM, Laravel routes this to gallery with the token `x.php`.
        assert_eq!(
            class_of("GET", "/gallery/x.php/api/v1/events/T"),
            is("gallery", "x.php")
        );
        assert_eq!(
            class_of("GET", "/public/index.php/api/v1/events/abc.php"),
            is("events", "abc.php")
        );
    }

    #[test]
    fn front_controllers_before_other_paths_are_not_guest_routes() {
        for target in [
            "/public/index.php/api/v1/users/5",
            "/public/index.php",
            "/server.php",
            "/favicon.ico",
            "/api/v1/users/a.b",
            "/public/api/v1/events",
            "/index.php/x.php/api/v2/events/T",
            "/public/gallery",
        ] {
            assert_eq!(class_of("GET", target), none(), "{target}");
        }
    }

    #[test]
    fn a_hostile_path_is_classified_without_panicking() {
        let long = format!("/{}.php{}", "a".repeat(5000), "/%4a".repeat(3000));
        assert_eq!(class_of("GET", &long), none());
        let cut_far = format!("/{}/x.php/api/v1/events/T", "a".repeat(5000));
        // Past the longest script path a cut is only tried after a front-controller segment.
        assert_eq!(class_of("GET", &cut_far), is("events", "T"));
    }

    #[test]
    fn trailing_slashes_are_ignored() {
        assert_eq!(
            class_of("GET", "/api/v1/gallery/T/download///"),
            is("gallery_download", "T")
        );
    }

    #[test]
    fn an_encoded_trailing_slash_counts_like_laravel_counts_it() {
        // Laravel trims before decoding, so `download/` is the rest of `gallery/{token}/{any}`.
        assert_eq!(
            class_of("GET", "/api/v1/gallery/T/download%2F"),
            is("gallery", "T")
        );
    }

    #[test]
    fn query_and_fragment_are_not_part_of_the_path() {
        assert_eq!(
            class_of("GET", "/api/v1/events/T?x=/download#y"),
            is("events", "T")
        );
        assert_eq!(class_of("GET", "/api/v1/events/T#/../x"), is("events", "T"));
    }

    #[test]
    fn absolute_form_is_judged_by_its_path() {
        assert_eq!(
            class_of("GET", "http://example.org/api/v1/events/T?q"),
            is("events", "T")
        );
        assert_eq!(
            class_of("GET", "https://u@h:8443/gallery/T"),
            is("gallery", "T")
        );
        assert_eq!(class_of("GET", "http:/api/v1/events/T"), is("events", "T"));
        assert_eq!(class_of("GET", "http://h"), none());
    }

    #[test]
    fn repeated_slashes_cannot_dodge_a_guest_route() {
        assert_eq!(class_of("GET", "//api//v1///events/T"), is("events", "T"));
        assert_eq!(
            class_of("GET", "/api/v1/gallery//T//download"),
            is("gallery_download", "T")
        );
    }

    #[test]
    fn dot_segments_cannot_dodge_a_guest_route() {
        assert_eq!(
            class_of("GET", "/api/v1/x/../gallery/T"),
            is("gallery", "T")
        );
        assert_eq!(
            class_of("GET", "/./api/v1/%2E%2E/v1/events/T"),
            is("events", "T")
        );
    }

    #[test]
    fn dot_segments_laravel_routes_keep_laravels_token() {
        // Laravel routes this itself, binding `..` as the token: that answer comes first.
        assert_eq!(
            class_of("GET", "/api/v1/events/../events/T"),
            is("events", "..")
        );
    }

    #[test]
    fn case_cannot_dodge_a_guest_route() {
        assert_eq!(class_of("GET", "/API/V1/Events/T"), is("events", "T"));
        assert_eq!(
            class_of("GET", "/api/v1/Gallery/T/DOWNLOAD"),
            is("gallery_download", "T")
        );
    }

    #[test]
    fn case_is_matched_exactly_first_like_laravel() {
        // Laravel routes this to gallery (`DOWNLOAD` is the rest), so the shield does too.
        assert_eq!(
            class_of("GET", "/api/v1/gallery/T/DOWNLOAD"),
            is("gallery", "T")
        );
    }

    #[test]
    fn backslashes_are_separators_when_nothing_else_matches() {
        assert_eq!(class_of("GET", "/api\\v1\\events\\T"), is("events", "T"));
    }

    #[test]
    fn tokens_keep_their_case() {
        assert_eq!(class_of("GET", "/API/v1/events/AbC"), is("events", "AbC"));
    }

    #[test]
    fn invalid_utf8_tokens_are_kept_lossily() {
        assert_eq!(
            class_of("GET", "/api/v1/events/a%FF"),
            is("events", "a\u{FFFD}")
        );
    }

    #[test]
    fn rest_matches_one_or_more_segments() {
        let specs = vec![RouteSpec {
            name: "all".into(),
            methods: None,
            paths: vec!["/x/**".into()],
        }];
        let t = RouteTable::new(&specs).unwrap();
        assert_eq!(t.classify(&Method::GET, "/x").class, None);
        assert_eq!(t.classify(&Method::GET, "/x/").class, None);
        assert_eq!(t.classify(&Method::GET, "/x/a/b").class, Some(0));
        // Laravel's `.*` matches the empty rest after an encoded slash.
        assert_eq!(t.classify(&Method::GET, "/x%2F").class, Some(0));
    }

    #[test]
    fn a_clean_path_is_matched_in_place() {
        assert!(is_clean(b"/api/v1/events/T"));
        assert!(is_clean(b"/"));
        assert!(!is_clean(b"/api/v1/events/T/"));
        assert!(!is_clean(b"/api//v1"));
        assert!(!is_clean(b"/api/./v1"));
        assert!(!is_clean(b"/a%41"));
        assert!(!is_clean(b"/Index.php/a"));
        assert!(matches!(
            laravel_path(b"/api/v1/events/T"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn canonical_path_classifies_the_same() {
        let t = table();
        for target in [
            "/api/v1/gallery/T/download%2F",
            "//API/v1/gallery/T/DOWNLOAD",
            "/index.php/x/../api/v1/events/a%2541/%3F",
            "http://h/gallery/T%20x",
            "/public/index.php/api/v1/gallery/T/download%2F",
            "/a/index.php/xxx%4api/v1/events/T",
            "/PUBLIC/INDEX.PHP//API/v1/events/T",
            "/favicon.ico/gallery/T",
        ] {
            let canonical = t.canonical_path(&Method::GET, target.as_bytes()).unwrap();
            assert_eq!(
                t.classify_target(&Method::GET, canonical.as_bytes()),
                t.classify_target(&Method::GET, target.as_bytes()),
                "{target} -> {canonical}"
            );
        }
        assert_eq!(
            t.canonical_path(&Method::GET, b"//API/v1/gallery/T/DOWNLOAD")
                .as_deref(),
            Some("/api/v1/gallery/T/download")
        );
    }

    #[test]
    fn bad_patterns_are_all_reported_with_their_place() {
        let specs = vec![
            RouteSpec {
                name: "a".into(),
                methods: Some(vec![]),
                paths: vec![
                    "api/x".into(),
                    "/a//b".into(),
                    "/a/**/b".into(),
                    "/a/{token}/{token}".into(),
                    "/a/{id}".into(),
                    "/a/x*".into(),
                    "/a/../b".into(),
                    "/a?b".into(),
                    "/index.php/a".into(),
                    "/a/".into(),
                ],
            },
            RouteSpec {
                name: "b".into(),
                methods: None,
                paths: vec![],
            },
        ];
        let errors = RouteTable::new(&specs).unwrap_err();
        let places: Vec<(usize, usize)> = errors.iter().map(|(r, p, _)| (*r, *p)).collect();
        assert_eq!(
            places,
            vec![
                (0, 0),
                (0, 0),
                (0, 1),
                (0, 2),
                (0, 3),
                (0, 4),
                (0, 5),
                (0, 6),
                (0, 7),
                (0, 8),
                (0, 9),
                (1, 0)
            ]
        );
        assert!(matches!(errors[0].2, PatternError::NoMethods { .. }));
        assert!(matches!(errors[3].2, PatternError::RestNotLast { .. }));
        let message = errors[1].2.to_string();
        assert!(
            message.contains("\"api/x\"") && message.contains("\"/api/x\""),
            "{message}"
        );
    }

    #[test]
    fn error_messages_are_lowercase_and_name_the_pattern() {
        let e = compile_pattern("/a/{id}").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("path \"/a/{id}\""), "{m}");
        assert!(m.contains("use *"), "{m}");
    }
}
