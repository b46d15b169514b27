//! The client side of the admin API, for `joinshield ctl` and `joinshield healthcheck`: one
//! HTTP/1.1 request on a fresh connection, bounded in time, with the bearer token.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why an admin call failed before it got an answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The connection or the exchange failed.
    #[error("{authority}: {source}")]
    Io {
        /// Where.
        authority: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{0}: no answer within 10 s")]
    Timeout(String),
    /// The answer was not HTTP.
    #[error("{0}: the answer is not HTTP")]
    Garbled(String),
}

/// An admin API endpoint and the token to use.
pub struct AdminClient {
    authority: String,
    token: Option<String>,
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl AdminClient {
    /// A client for `url` (`http://host:port` or `host:port`); `token` from the environment.
    pub fn new(url: &str, token: Option<String>) -> Self {
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        AdminClient {
            authority,
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// The address called.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends one request and reads the whole answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Reply, CtlError> {
        let io = |source| CtlError::Io {
            authority: self.authority.clone(),
            source,
        };
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(io)?;
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                self.authority
            );
            if let Some(t) = &self.token {
                req.push_str(&format!("Authorization: Bearer {t}\r\n"));
            }
            let body = body.unwrap_or("");
            if !body.is_empty() || method == "POST" {
                req.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            req.push_str("\r\n");
            req.push_str(body);
            s.write_all(req.as_bytes()).await.map_err(io)?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.map_err(io)?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| CtlError::Timeout(self.authority.clone()))??;
        parse_reply(&buf).ok_or_else(|| CtlError::Garbled(self.authority.clone()))
    }
}

/// Parses a `Connection: close` HTTP/1.1 answer (Content-Length or chunked or to the end).
fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(buf.get(..head_end)?).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let rest = buf.get(head_end + 4..)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(rest.get(..line_end)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = rest.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_answers_are_read() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        let r = parse_reply(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno").unwrap();
        assert_eq!((r.status, r.body.as_str()), (401, "no"));
        assert!(parse_reply(b"garbage").is_none());
    }
}
