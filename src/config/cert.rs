//! The HTTPS certificate pair: read from its two files, checked to belong together and to be
//! valid now, described for `check` and the reload log. Part of loading the configuration: a
//! pair that fails any check refuses the whole configuration (the old one keeps serving).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::clock::rfc3339 as instant;
use crate::config::ConfigError;

/// A certificate expiring sooner than this is a warning (in `check` and on reload).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

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

/// The crypto provider: *ring*, which builds with a C compiler alone (aws-lc-rs would want
/// cmake on some platforms and takes far longer to build), with its default cipher suites: for
/// TLS 1.3 AES-256-GCM, AES-128-GCM and ChaCha20-Poly1305; for TLS 1.2 ECDHE with those AEADs.
pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A self-signed pair for localhost, valid between the two Unix times, written to `dir` (for
/// tests).
#[cfg(test)]
pub(crate) fn self_signed_pair(
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

#[cfg(test)]
mod tests {
    use super::self_signed_pair as pair;
    use super::*;

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
}
