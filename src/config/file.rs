//! The configuration file as written: serde types that mirror the TOML, one struct per section.
//!
//! Every leaf is a [`Field`], which keeps a value of the wrong type as an error instead of
//! aborting the whole parse, and every table captures the keys it does not know. That is how
//! `validate` can report every mistake in a file at once, each with its key and line, rather than
//! stopping at the first one as plain `deny_unknown_fields` would.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A value as written: the typed value, or why it could not be read as that type.
#[derive(Debug, Clone)]
pub struct Field<T>(pub Result<T, String>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        let shown = value.to_string();
        Ok(Field(T::deserialize(value).map_err(|e| {
            let e = e.to_string();
            format!("{shown} is the wrong type ({})", e.trim())
        })))
    }
}

/// Keys a table did not expect; each is reported as an error.
pub type Unknown = BTreeMap<String, toml::Value>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    pub server: Option<FileServer>,
    pub client: Option<FileClient>,
    pub admin: Option<FileAdmin>,
    pub log: Option<FileLog>,
    pub route: Option<Vec<FileRoute>>,
    pub limit: Option<Vec<FileLimit>>,
    pub lists: Option<FileLists>,
    pub switch: Option<Vec<FileSwitch>>,
    pub enumeration: Option<FileEnumeration>,
    pub alerts: Option<FileAlerts>,
    pub cluster: Option<FileCluster>,
    pub tokens: Option<FileTokens>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
pub struct FileServer {
    pub listen: Option<Field<String>>,
    pub upstream: Option<Field<String>>,
    pub header_timeout: Option<Field<String>>,
    pub upstream_timeout: Option<Field<String>>,
    pub max_body: Option<Field<String>>,
    pub shutdown_grace: Option<Field<String>>,
    pub state_file: Option<Field<String>>,
    pub tls_listen: Option<Field<String>>,
    pub tls_cert: Option<Field<String>>,
    pub tls_key: Option<Field<String>>,
    pub tls_handshake_timeout: Option<Field<String>>,
    pub redirect_https: Option<Field<bool>>,
    pub hsts: Option<Field<String>>,
    pub body_timeout: Option<Field<String>>,
    pub max_connections: Option<Field<i64>>,
    pub max_connections_per_ip: Option<Field<i64>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[client]`
#[derive(Debug, Default, Deserialize)]
pub struct FileClient {
    pub trusted_proxies: Option<Field<Vec<String>>>,
    pub ipv6_prefix: Option<Field<i64>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
pub struct FileAdmin {
    pub listen: Option<Field<String>>,
    pub token_env: Option<Field<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
pub struct FileLog {
    pub file: Option<Field<String>>,
    pub format: Option<Field<String>>,
    pub channel: Option<Field<String>>,
    pub timezone: Option<Field<String>>,
    pub token_preview: Option<Field<i64>>,
    pub access: Option<Field<String>>,
    pub access_file: Option<Field<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[[route]]`.
#[derive(Debug, Default, Deserialize)]
pub struct FileRoute {
    pub name: Option<Field<String>>,
    pub methods: Option<Field<Vec<String>>>,
    pub paths: Option<Field<Vec<String>>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[[limit]]`.
#[derive(Debug, Default, Deserialize)]
pub struct FileLimit {
    pub name: Option<Field<String>>,
    pub routes: Option<Field<Vec<String>>>,
    pub key: Option<Field<String>>,
    pub rate: Option<Field<String>>,
    pub burst: Option<Field<i64>>,
    pub mode: Option<Field<String>>,
    pub until: Option<Field<String>>,
    pub shared: Option<Field<bool>>,
    pub max_keys: Option<Field<i64>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[lists]`
#[derive(Debug, Default, Deserialize)]
pub struct FileLists {
    pub blocklist: Option<Field<String>>,
    pub allowlist: Option<Field<String>>,
    pub revoked_tokens: Option<Field<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[[switch]]`.
#[derive(Debug, Default, Deserialize)]
pub struct FileSwitch {
    pub name: Option<Field<String>>,
    pub routes: Option<Field<Vec<String>>>,
    pub paused: Option<Field<bool>>,
    pub message: Option<Field<String>>,
    pub until: Option<Field<String>>,
    pub retry_after: Option<Field<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[enumeration]`
#[derive(Debug, Default, Deserialize)]
pub struct FileEnumeration {
    pub statuses: Option<Field<Vec<i64>>>,
    pub max_failures: Option<Field<i64>>,
    pub prefix_max_failures: Option<Field<i64>>,
    pub window: Option<Field<String>>,
    pub ban: Option<Field<String>>,
    pub max_ban: Option<Field<String>>,
    pub token_pattern: Option<Field<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[alerts]`
#[derive(Debug, Default, Deserialize)]
pub struct FileAlerts {
    pub webhook: Option<Field<String>>,
    pub error_rate: Option<Field<f64>>,
    pub denial_rate: Option<Field<String>>,
    pub cooldown: Option<Field<String>>,
    pub timeout: Option<Field<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[cluster]`
#[derive(Debug, Default, Deserialize)]
pub struct FileCluster {
    pub redis: Option<Field<String>>,
    pub name: Option<Field<String>>,
    pub timeout: Option<Field<String>>,
    pub sync_interval: Option<Field<String>>,
    pub lease: Option<Field<i64>>,
    pub key_prefix: Option<Field<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[tokens]`
#[derive(Debug, Default, Deserialize)]
pub struct FileTokens {
    pub case_sensitive: Option<Field<bool>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
