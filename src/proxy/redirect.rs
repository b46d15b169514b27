//! The redirect of a plain request to HTTPS (`redirect_https`), right after framing and before
//! any other check: where to, or why not.

use http::{header, Request};

/// Where a plain request is sent over HTTPS: `https://<host>[:port]<path and query>`, the host
/// being the request's (absolute-form authority, else its one `Host`) without its port, and the
/// port the HTTPS listener's (left out when 443). `None` when the host is not a plain DNS name
/// or IP address: nothing the client sent can make the shield redirect elsewhere (no userinfo,
/// no second authority, no path or control bytes smuggled into the host).
pub(crate) fn https_location<B>(req: &Request<B>, port: u16) -> Option<http::HeaderValue> {
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => {
            let host = req.headers().get(header::HOST)?;
            http::uri::Authority::try_from(host.as_bytes()).ok()?
        }
    };
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host();
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    if !valid {
        return None;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    http::HeaderValue::from_str(&location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(target: &str, host: Option<&str>, port: u16) -> Option<String> {
        let mut req = Request::builder().uri(target);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        let req = req.body(()).unwrap();
        https_location(&req, port).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn the_https_location_keeps_host_path_and_query_and_names_the_tls_port() {
        assert_eq!(
            location("/a/b?c=1&d", Some("app.test:8080"), 8443).as_deref(),
            Some("https://app.test:8443/a/b?c=1&d")
        );
        assert_eq!(
            location("/x", Some("App.Test"), 443).as_deref(),
            Some("https://App.Test/x")
        );
        assert_eq!(
            location("/", Some("[2001:db8::1]:80"), 443).as_deref(),
            Some("https://[2001:db8::1]/")
        );
        assert_eq!(
            location("http://10.0.0.1:80/p?q", Some("ignored.test"), 8443).as_deref(),
            Some("https://10.0.0.1:8443/p?q")
        );
        assert_eq!(
            location("*", Some("app.test"), 443).as_deref(),
            Some("https://app.test/")
        );
    }

    #[test]
    fn a_host_that_is_not_a_plain_name_or_address_gets_no_location() {
        for host in [
            "user@evil.test",
            "evil.test\\@app.test",
            "a b",
            "app.test/x",
            "app_test",
            "[::1",
            "[nope]",
            "",
        ] {
            assert_eq!(location("/", Some(host), 443), None, "{host:?}");
        }
        assert_eq!(location("/", None, 443), None);
        let long = "a".repeat(254);
        assert_eq!(location("/", Some(&long), 443), None);
    }
}
