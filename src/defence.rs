//! The defences' state and the one act on it that several parts share: banning a guesser.
//!
//! [`Defence`] holds the ban table and the distinct-failure counter (the policy's state, kept
//! across requests and reloads) with what a ban must reach besides the table: the log, the
//! alerts and, in a cluster, the other replicas. The request path calls it when a token fails;
//! the cluster's shared count reaches it through the [`crate::cluster::Guessing`] callback the
//! composition root builds on it.

use std::sync::Arc;

use ipnet::IpNet;

use crate::cluster::Cluster;
use crate::policy::bans::{Ban, Bans};
use crate::policy::guessing::{EnumerationSettings, FailureCounter, Offence, OffenceKind};
use crate::telemetry::alerts::{Alerts, PrefixBan};
use crate::telemetry::log::{Level, LogHandle, Record, Value};
use crate::telemetry::timeline::Timeline;

/// Most clients and prefixes whose failed tokens are counted at once.
pub const FAILURE_TABLE_CLIENTS: usize = 100_000;
/// See [`FAILURE_TABLE_CLIENTS`].
pub const FAILURE_TABLE_PREFIXES: usize = 50_000;

/// The defences' state, shared by the request path, the admin API and the background tasks.
pub struct Defence {
    /// Active bans (automatic and manual); state kept across restarts.
    pub bans: Arc<Bans>,
    /// Distinct failed tokens per client and prefix.
    pub failures: FailureCounter,
    log: LogHandle,
    alerts: Arc<Alerts>,
    timeline: Arc<Timeline>,
    cluster: Option<Arc<Cluster>>,
}

impl Defence {
    /// The defences around `bans`, banning into `log`, `alerts`, the `timeline` and `cluster`.
    pub fn new(
        bans: Arc<Bans>,
        log: LogHandle,
        alerts: Arc<Alerts>,
        timeline: Arc<Timeline>,
        cluster: Option<Arc<Cluster>>,
    ) -> Defence {
        Defence {
            bans,
            failures: FailureCounter::new(FAILURE_TABLE_CLIENTS, FAILURE_TABLE_PREFIXES),
            log,
            alerts,
            timeline,
            cluster,
        }
    }

    /// Bans the network of `offence` unless a ban of exactly that network is already in force
    /// (the local and the cluster count may both reach a threshold for one guesser); logs it
    /// and, in a cluster, announces it to the other replicas.
    pub fn ban_offence(
        &self,
        offence: &Offence,
        settings: &EnumerationSettings,
        ipv6_prefix: u8,
        now_unix: i64,
    ) {
        let net: IpNet = crate::policy::client_ip::canonical_net(offence.net).trunc();
        if self.bans.get(net).is_some_and(|b| b.until > now_unix) {
            return;
        }
        let ban = self
            .bans
            .ban_offence(offence, settings.ban, settings.max_ban, now_unix);
        self.log.log(brute_force_record(&ban, ipv6_prefix));
        self.timeline
            .banned(now_unix.saturating_mul(1000), &ban, None);
        if offence.kind == OffenceKind::Prefix {
            self.alerts.prefix_banned(PrefixBan {
                net: ban.net,
                distinct_tokens: ban.distinct_tokens,
                ban_seconds: ban.until.saturating_sub(ban.created),
            });
        }
        if let Some(cluster) = &self.cluster {
            cluster.announce_ban(&ban);
        }
    }
}

/// The WARNING `Join token brute force detected` for an automatic ban, with context `ip` (a
/// client ban: the address, or the IPv6 network as CIDR) or `prefix` (a /24 or /48 ban: the
/// CIDR), then `distinct_tokens`, `ban_seconds`, `until` (RFC 3339 UTC) and `offences`.
///
/// `ipv6_prefix` is the `[client] ipv6_prefix` IPv6 clients are grouped by: an IPv6 ban at
/// least that long is a client's, a shorter one a prefix's. An IPv4 ban is a client's when it is
/// a /32.
pub fn brute_force_record(ban: &Ban, ipv6_prefix: u8) -> Record {
    let record = Record::new(Level::Warning, "Join token brute force detected");
    let record = match ban.net {
        IpNet::V4(n) if n.prefix_len() == 32 => record.with("ip", n.addr().to_string()),
        IpNet::V6(n) if n.prefix_len() == 128 => record.with("ip", n.addr().to_string()),
        IpNet::V6(n) if n.prefix_len() >= ipv6_prefix => record.with("ip", n.to_string()),
        net => record.with("prefix", net.to_string()),
    };
    record
        .with(
            "distinct_tokens",
            ban.distinct_tokens.map_or(Value::Null, Value::from),
        )
        .with("ban_seconds", ban.until.saturating_sub(ban.created))
        .with("until", crate::clock::rfc3339(ban.until))
        .with("offences", ban.offences)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: i64 = 1_795_802_400; // 2026-11-27T18:00:00Z

    fn offence(n: &str, kind: OffenceKind) -> Offence {
        Offence {
            net: n.parse().unwrap(),
            distinct_tokens: 20,
            kind,
        }
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn brute_force_record_names_ip_or_prefix_in_order() {
        let bans = Bans::new();
        let until = 1_795_798_800; // 2026-11-27T17:00:00Z
        let ban = bans.ban_offence(
            &offence("198.51.100.0/24", OffenceKind::Prefix),
            minutes(60),
            minutes(24 * 60),
            until - 3600,
        );
        let r = brute_force_record(&ban, 64);
        assert_eq!(r.level, Level::Warning);
        assert_eq!(r.message, "Join token brute force detected");
        assert_eq!(
            r.context,
            vec![
                ("prefix", Value::from("198.51.100.0/24")),
                ("distinct_tokens", Value::UInt(20)),
                ("ban_seconds", Value::Int(3600)),
                ("until", Value::from("2026-11-27T17:00:00Z")),
                ("offences", Value::UInt(1)),
            ]
        );
        let client = bans.ban_offence(
            &offence("203.0.113.7/32", OffenceKind::Client),
            minutes(15),
            minutes(60),
            NOW,
        );
        assert_eq!(
            brute_force_record(&client, 64).context[0],
            ("ip", Value::from("203.0.113.7"))
        );
        let v6 = bans.ban_offence(
            &offence("2001:db8:1:2::/64", OffenceKind::Client),
            minutes(15),
            minutes(60),
            NOW,
        );
        assert_eq!(
            brute_force_record(&v6, 64).context[0],
            ("ip", Value::from("2001:db8:1:2::/64"))
        );
        let v6p = bans.ban_offence(
            &offence("2001:db8:1::/48", OffenceKind::Prefix),
            minutes(15),
            minutes(60),
            NOW,
        );
        assert_eq!(
            brute_force_record(&v6p, 64).context[0],
            ("prefix", Value::from("2001:db8:1::/48"))
        );
    }
}
