//! HTTPS at the front door: the certificate pair (read, checked, reloaded with the rest of the
//! configuration) and the handshake of each connection on `tls_listen`.
//!
//! The pair lives in the configuration snapshot like the lists: a reload reads it again, refuses a
//! broken, mismatched or expired pair (the old one keeps serving), and swaps it in with
//! everything else. The rustls server configuration is built once at start; its certificate
//! resolver reads the snapshot at every handshake, so new handshakes get the pair in force and
//! established connections are untouched.
//!
//! A handshake is bounded three ways: it must finish within `tls_handshake_timeout` of the
//! accept; at most [`MAX_HANDSHAKES`] run at once (later ones wait for a slot, within the same
//! timeout); and a connection whose first byte is not a TLS handshake record (plain HTTP sent to
//! the HTTPS port, garbage) is closed at once, before rustls sees it. None of these is logged:
//! each is counted in `joinshield_tls_handshake_failures_total{reason}`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;
use crate::snapshot::Snapshot;

/// Most handshakes in progress at once; a connection beyond it waits for a slot (its handshake
/// timeout keeps running). A handshake costs a few hundred microseconds of CPU: this bounds the
/// CPU and memory a flood of new connections can take, not the number of open sockets.
pub const MAX_HANDSHAKES: usize = 256;

/// A certificate expiring sooner than this is a warning (in `check` and on reload).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1): a ClientHello
/// always starts with it.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A loaded certificate chain and its private key, checked to belong together.
#[derive(Debug)]
pub struct CertPair {
    /// The chain and signing key, as rustls uses them.
    pub key: Arc<CertifiedKey>,
    /// The end-entity certificate's serial number (hex, colon-separated).
    pub serial: String,
    /// Its subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// Unix seconds before which it is not valid.
    pub not_before: i64,
    /// Unix seconds after which it is not valid.
    pub not_after: i64,
}

impl CertPair {
    /// Reads the chain at `cert` and the key at `key`, and checks that the key is the
    /// certificate's and that the certificate is valid at `now_unix`. Every problem found is an
    /// error naming its file and the config key (`server.tls_cert`, `server.tls_key`).
    pub fn load(cert: &Path, key: &Path, now_unix: i64) -> Result<CertPair, Vec<ConfigError>> {
        let error = |file: &Path, which: &str, message: String| ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: format!("server.{which}"),
            message,
        };
        let chain = read_chain(cert).map_err(|m| error(cert, "tls_cert", m));
        let signing = read_key(key).map_err(|m| error(key, "tls_key", m));
        let (chain, signing) = match (chain, signing) {
            (Ok(c), Ok(s)) => (c, s),
            (c, s) => return Err(c.err().into_iter().chain(s.err()).collect()),
        };
        let end_entity = chain.first().map(|c| c.as_ref()).unwrap_or_default();
        let facts = match x509_parser::parse_x509_certificate(end_entity) {
            Ok((_, parsed)) => Facts::of(&parsed),
            Err(e) => {
                return Err(vec![error(
                    cert,
                    "tls_cert",
                    format!("the first certificate is not a valid X.509 certificate ({e}): put the server's own certificate first, then its chain"),
                )])
            }
        };
        let chained = chain.len() > 1;
        let certified = CertifiedKey::new(chain, signing);
        if let Err(e) = certified.keys_match() {
            let message = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                    "this key does not belong to the certificate in {}: install the key the certificate was issued for{}",
                    cert.display(),
                    if chained { " (and check that the server's own certificate comes first in the chain file)" } else { "" }
                ),
                other => format!(
                    "cannot check that this key belongs to the certificate in {} ({other})",
                    cert.display()
                ),
            };
            return Err(vec![error(key, "tls_key", message)]);
        }
        if now_unix > facts.not_after {
            return Err(vec![error(
                cert,
                "tls_cert",
                format!(
                    "the certificate (serial {}) expired on {}: install a renewed certificate",
                    facts.serial,
                    instant(facts.not_after)
                ),
            )]);
        }
        if now_unix < facts.not_before {
            return Err(vec![error(
                cert,
                "tls_cert",
                format!(
                    "the certificate (serial {}) is not valid before {}: check the clock, or install a certificate valid now",
                    facts.serial,
                    instant(facts.not_before)
                ),
            )]);
        }
        Ok(CertPair {
            key: Arc::new(certified),
            serial: facts.serial,
            names: facts.names,
            not_before: facts.not_before,
            not_after: facts.not_after,
        })
    }

    /// A warning when the certificate expires within [`EXPIRY_WARNING`] of `now_unix`.
    pub fn expiry_warning(&self, now_unix: i64) -> Option<String> {
        let left = self.not_after.saturating_sub(now_unix);
        let window = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
        (left < window).then(|| {
            format!(
                "the TLS certificate (serial {}) expires on {}, in {} days: renew it",
                self.serial,
                instant(self.not_after),
                left / 86_400
            )
        })
    }

    /// One line for `check` and the reload log: serial, names and validity.
    pub fn describe(&self) -> String {
        format!(
            "serial {} for {} valid until {}",
            self.serial,
            if self.names.is_empty() {
                "(no subject alternative names)".to_string()
            } else {
                self.names.join(", ")
            },
            instant(self.not_after)
        )
    }
}

/// What the shield reports about the end-entity certificate.
struct Facts {
    serial: String,
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
}

impl Facts {
    fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Facts {
        use x509_parser::extensions::GeneralName;
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Facts {
            serial: cert.raw_serial_as_string(),
            names,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        }
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read the certificate file: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain ({e}): give the certificate, then its intermediates, each as -----BEGIN CERTIFICATE-----"))?;
    if chain.is_empty() {
        return Err("no -----BEGIN CERTIFICATE----- block in the file: give the certificate (then its intermediates) in PEM".to_string());
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<Arc<dyn rustls::sign::SigningKey>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the key file: {e}"))?;
    let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => "no private key in the file: give the key in PEM (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)".to_string(),
        other => format!("not a PEM private key ({other})"),
    })?;
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("the key cannot be used ({e}): give an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key"))
}

/// `2026-11-28T06:00:00Z` for Unix seconds.
fn instant(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// The crypto provider: *ring*, which builds with a C compiler alone (aws-lc-rs would want
/// cmake on some platforms and takes far longer to build), with its default cipher suites: for
/// TLS 1.3 AES-256-GCM, AES-128-GCM and ChaCha20-Poly1305; for TLS 1.2 ECDHE with those AEADs.
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Hands rustls the certificate pair of the snapshot in force at each handshake.
#[derive(Debug)]
struct SnapshotCerts(Arc<ArcSwap<Snapshot>>);

impl ResolvesServerCert for SnapshotCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate for every name: SNI is not consulted.
        self.0.load().loaded.tls.as_ref().map(|p| p.key.clone())
    }
}

/// Why a handshake did not complete; each is one value of the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The first byte was not a TLS handshake record (plain HTTP, garbage).
    NotTls,
    /// Not done within the handshake timeout (including the wait for a slot).
    Timeout,
    /// The client closed or reset the connection first.
    Closed,
    /// A TLS error: no common protocol version, cipher suite or ALPN protocol, a bad message.
    Protocol,
}

/// The metric's `reason` label of each [`HandshakeFailure`], in index order.
pub const FAILURE_REASONS: [&str; 4] = ["not_tls", "timeout", "closed", "protocol"];

impl HandshakeFailure {
    /// Index into [`FAILURE_REASONS`].
    pub fn index(self) -> usize {
        match self {
            HandshakeFailure::NotTls => 0,
            HandshakeFailure::Timeout => 1,
            HandshakeFailure::Closed => 2,
            HandshakeFailure::Protocol => 3,
        }
    }
}

/// Handshake counters, kept for the life of the process.
#[derive(Debug, Default)]
pub struct HandshakeCounts {
    /// Handshakes completed.
    pub done: AtomicU64,
    /// Handshakes failed, by [`HandshakeFailure::index`].
    pub failed: [AtomicU64; 4],
}

impl HandshakeCounts {
    fn count(&self, outcome: Result<(), HandshakeFailure>) {
        match outcome {
            Ok(()) => self.done.fetch_add(1, Ordering::Relaxed),
            Err(f) => self.failed[f.index()].fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The TLS side of the HTTPS listener: the acceptor and the handshake slots.
pub struct TlsFront {
    acceptor: TlsAcceptor,
    slots: Semaphore,
}

impl TlsFront {
    /// TLS 1.3 and 1.2 with *ring*'s default suites, ALPN `http/1.1` only (the shield speaks
    /// HTTP/1.1), no client certificates, the certificate from `snapshot` at each handshake.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Result<TlsFront, rustls::Error> {
        TlsFront::with_slots(snapshot, MAX_HANDSHAKES)
    }

    /// As [`TlsFront::new`], with at most `slots` handshakes at once.
    pub fn with_slots(
        snapshot: Arc<ArcSwap<Snapshot>>,
        slots: usize,
    ) -> Result<TlsFront, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SnapshotCerts(snapshot)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsFront {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            slots: Semaphore::new(slots),
        })
    }

    /// Runs the server side of the handshake on `stream` within `timeout`, counting the outcome.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        timeout: Duration,
        counts: &HandshakeCounts,
    ) -> Option<TlsStream<TcpStream>> {
        let outcome = match tokio::time::timeout(timeout, self.try_handshake(stream)).await {
            Ok(result) => result,
            Err(_) => Err(HandshakeFailure::Timeout),
        };
        counts.count(outcome.as_ref().map(|_| ()).map_err(|f| *f));
        outcome.ok()
    }

    async fn try_handshake(
        &self,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
        // Look at the first byte before taking a slot: a silent connection holds none, and
        // plain HTTP or garbage is closed without rustls parsing it.
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return Err(HandshakeFailure::Closed),
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => return Err(HandshakeFailure::NotTls),
            Ok(_) => {}
        }
        // The semaphore is never closed; should it be, the handshake simply goes ahead.
        let _slot = self.slots.acquire().await.ok();
        self.acceptor.accept(stream).await.map_err(|e| {
            let tls_error = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
            if tls_error || e.kind() == std::io::ErrorKind::InvalidData {
                HandshakeFailure::Protocol
            } else {
                HandshakeFailure::Closed
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair for localhost, valid between the two Unix times, written to `dir`.
    fn pair(
        dir: &Path,
        not_before: i64,
        not_after: i64,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_pair_valid_now_loads_with_its_names_and_no_warning_far_from_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pair(dir.path(), NOW - DAY, NOW + 90 * DAY);
        let p = CertPair::load(&c, &k, NOW).unwrap();
        assert_eq!(p.names, ["localhost"]);
        assert_eq!(p.not_after, NOW + 90 * DAY);
        assert_eq!(p.expiry_warning(NOW), None);
        let warning = p.expiry_warning(NOW + 80 * DAY).unwrap();
        assert!(warning.contains("in 10 days"), "{warning}");
    }

    #[test]
    fn a_certificate_not_yet_valid_is_refused_with_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pair(dir.path(), NOW + DAY, NOW + 90 * DAY);
        let e = CertPair::load(&c, &k, NOW).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "server.tls_cert");
        assert!(
            e[0].message
                .contains("is not valid before 2027-01-16T08:00:00Z"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn both_files_unreadable_are_two_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = CertPair::load(&dir.path().join("c"), &dir.path().join("k"), NOW).unwrap_err();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["server.tls_cert", "server.tls_key"]);
    }

    #[test]
    fn a_key_file_holding_the_certificate_is_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = pair(dir.path(), NOW - DAY, NOW + DAY);
        let e = CertPair::load(&c, &c, NOW).unwrap_err();
        assert!(
            e[0].message.starts_with("no private key in the file"),
            "{e:?}"
        );
    }

    /// Handshakes of `front` for every connection `listener` accepts, each with its timeout
    /// from `timeouts` in accept order.
    fn serve(
        listener: tokio::net::TcpListener,
        front: Arc<TlsFront>,
        counts: Arc<HandshakeCounts>,
        timeouts: Vec<Duration>,
    ) {
        tokio::spawn(async move {
            for timeout in timeouts {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (front, counts) = (front.clone(), counts.clone());
                tokio::spawn(async move {
                    // Keep the TLS stream open until the client goes.
                    if let Some(mut tls) = front.handshake(stream, timeout, &counts).await {
                        use tokio::io::AsyncReadExt;
                        let mut buf = [0u8; 16];
                        let _ = tls.read(&mut buf).await;
                    }
                });
            }
        });
    }

    #[tokio::test]
    async fn handshakes_beyond_the_slots_wait_and_time_out_until_a_slot_frees() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp();
        let (cert, key) = pair(dir.path(), now - DAY, now + DAY);
        let text = format!(
            "[server]\nupstream = \"http://127.0.0.1:1\"\ntls_listen = \"127.0.0.1:0\"\n\
             tls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let loaded = crate::config::parse(&text, &dir.path().join("c.toml")).unwrap();
        let snapshot = Snapshot::build(Arc::new(loaded), 1, None).unwrap();
        let front =
            Arc::new(TlsFront::with_slots(Arc::new(ArcSwap::from_pointee(snapshot)), 1).unwrap());
        let counts = Arc::new(HandshakeCounts::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let long = Duration::from_secs(60);
        serve(
            listener,
            front,
            counts.clone(),
            vec![long, Duration::from_secs(1), long],
        );

        // A: the start of a TLS record, then nothing: it takes the only slot and keeps it.
        let mut a = TcpStream::connect(addr).await.unwrap();
        a.write_all(&[TLS_HANDSHAKE_RECORD, 0x03, 0x01])
            .await
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let handshake = |client: Arc<rustls::ClientConfig>| async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            tokio::time::timeout(
                Duration::from_secs(30),
                tokio_rustls::TlsConnector::from(client).connect(name, tcp),
            )
            .await
            .expect("a handshake is never left hanging")
        };
        // B: a real client; it waits for the slot until its 1 s timeout, then is closed.
        let b = handshake(client.clone()).await;
        assert!(b.is_err(), "B got a slot while A held the only one");
        assert_eq!(
            counts.failed[HandshakeFailure::Timeout.index()].load(Ordering::SeqCst),
            1
        );
        // A goes away: its slot frees, and C's handshake completes.
        drop(a);
        let c = handshake(client).await;
        assert!(c.is_ok(), "{c:?}");
    }
}
