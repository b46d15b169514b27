//! HTTPS at the front door: the handshake of each connection on `tls_listen`, in the
//! connection's own task, before HTTP.
//!
//! The certificate pair lives in the configuration snapshot like the lists (read and checked by
//! `config/cert.rs`): a reload reads it again, refuses a broken, mismatched or expired pair (the
//! old one keeps serving), and swaps it in with everything else. The rustls server
//! configuration is built once at start; its certificate resolver reads the snapshot at every
//! handshake, so new handshakes get the pair in force and established connections are untouched.
//!
//! A handshake is bounded three ways: it must finish within `tls_handshake_timeout` of the
//! accept; at most [`MAX_HANDSHAKES`] run at once (later ones wait for a slot, within the same
//! timeout); and a connection whose first byte is not a TLS handshake record (plain HTTP sent to
//! the HTTPS port, garbage) is closed at once, before rustls sees it. None of these is logged:
//! each is counted in `joinshield_tls_handshake_failures_total{reason}`.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::cert::provider;
use crate::snapshot::Snapshots;
use crate::telemetry::meters::{HandshakeCounts, HandshakeFailure};

/// Most handshakes in progress at once; a connection beyond it waits for a slot (its handshake
/// timeout keeps running). A handshake costs a few hundred microseconds of CPU: this bounds the
/// CPU and memory a flood of new connections can take, not the number of open sockets.
pub const MAX_HANDSHAKES: usize = 256;

/// The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1): a ClientHello
/// always starts with it.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Hands rustls the certificate pair of the snapshot in force at each handshake.
#[derive(Debug)]
struct SnapshotCerts(Arc<Snapshots>);

impl ResolvesServerCert for SnapshotCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate for every name: SNI is not consulted.
        self.0.load().loaded.tls.as_ref().map(|p| p.key.clone())
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
    pub fn new(snapshot: Arc<Snapshots>) -> Result<TlsFront, rustls::Error> {
        TlsFront::with_slots(snapshot, MAX_HANDSHAKES)
    }

    /// As [`TlsFront::new`], with at most `slots` handshakes at once.
    pub fn with_slots(snapshot: Arc<Snapshots>, slots: usize) -> Result<TlsFront, rustls::Error> {
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
    use crate::clock::Clock;
    use crate::config::cert::self_signed_pair as pair;
    use crate::telemetry::meters::HandshakeFailure;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use std::sync::atomic::Ordering;

    const DAY: i64 = 86_400;

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
        let now = crate::clock::SystemClock.now().unix();
        let (cert, key) = pair(dir.path(), now - DAY, now + DAY);
        let text = format!(
            "[server]\nupstream = \"http://127.0.0.1:1\"\ntls_listen = \"127.0.0.1:0\"\n\
             tls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let loaded = crate::config::parse(&text, &dir.path().join("c.toml")).unwrap();
        let snapshot = crate::snapshot::Snapshot::build(Arc::new(loaded), 1, None, now).unwrap();
        let (snapshots, _publisher) = Snapshots::new(snapshot);
        let front = Arc::new(TlsFront::with_slots(snapshots, 1).unwrap());
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
