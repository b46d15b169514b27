//! Route classification (interim: exact segment matching; the full Laravel-faithful normaliser
//! replaces this module).

/// One `[[route]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Class name.
    pub name: String,
    /// Methods, or any.
    pub methods: Option<Vec<http::Method>>,
    /// Path patterns.
    pub paths: Vec<String>,
}
/// Index of a route class.
pub type ClassId = u16;
/// Compiled routes.
#[derive(Debug, Clone)]
pub struct RouteTable {
    specs: Vec<RouteSpec>,
    names: Vec<String>,
}
/// Result of classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Class.
    pub class: Option<ClassId>,
    /// Token.
    pub token: Option<Box<str>>,
}
/// A bad pattern.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// Must start with a slash.
    #[error("{0:?} must start with /")]
    NoSlash(String),
}
impl RouteTable {
    /// Compiles.
    pub fn new(specs: &[RouteSpec]) -> Result<RouteTable, Vec<(usize, usize, PatternError)>> {
        let mut errs = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            for (j, p) in s.paths.iter().enumerate() {
                if !p.starts_with('/') {
                    errs.push((i, j, PatternError::NoSlash(p.clone())));
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(RouteTable {
            specs: specs.to_vec(),
            names: specs.iter().map(|s| s.name.clone()).collect(),
        })
    }
    /// Names.
    pub fn names(&self) -> &[String] {
        &self.names
    }
    /// Classifies.
    pub fn classify(&self, method: &http::Method, path: &str) -> Classified {
        let path = path.trim_end_matches('/');
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        for (i, s) in self.specs.iter().enumerate() {
            if let Some(m) = &s.methods {
                if !m.contains(method) {
                    continue;
                }
            }
            for p in &s.paths {
                let pats: Vec<&str> = p.split('/').skip(1).collect();
                let mut token = None;
                let mut ok = true;
                let mut k = 0;
                for pat in &pats {
                    if *pat == "**" {
                        ok = segs.len() > k;
                        k = segs.len();
                        break;
                    }
                    let Some(seg) = segs.get(k) else {
                        ok = false;
                        break;
                    };
                    match *pat {
                        "{token}" => token = Some((*seg).into()),
                        "*" => {}
                        lit if lit == *seg => {}
                        _ => {
                            ok = false;
                            break;
                        }
                    }
                    k += 1;
                }
                if ok && k == segs.len() {
                    return Classified {
                        class: Some(i as u16),
                        token,
                    };
                }
            }
        }
        Classified {
            class: None,
            token: None,
        }
    }
}
#[doc(hidden)]
/// Defaults.
pub fn default_specs() -> Vec<RouteSpec> {
    let r = |n: &str, m: Option<Vec<http::Method>>, p: &[&str]| RouteSpec {
        name: n.into(),
        methods: m,
        paths: p.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        r(
            "gallery_download",
            None,
            &[
                "/api/v1/gallery/{token}/download",
                "/api/v1/gallery/{token}/photos/*/download",
                "/api/v1/events/{token}/photos/*/download",
                "/gallery/{token}/download",
            ],
        ),
        r(
            "upload",
            Some(vec![http::Method::POST, http::Method::PUT]),
            &[
                "/api/v1/events/{token}/upload",
                "/api/v1/events/{token}/photos",
            ],
        ),
        r(
            "events",
            None,
            &["/api/v1/events/{token}", "/api/v1/events/{token}/**"],
        ),
        r(
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
