//! What the decision reads of a snapshot: the lists, the paused switches, the token pattern and
//! the limits, in one value built at reload ([`Rules`]), and the set of route classes a switch
//! or a limit covers ([`ClassMask`]).

use std::sync::Arc;
use std::time::Duration;

use crate::policy::classify::ClassId;
use crate::policy::limits::LimitRule;
use crate::policy::lists::{IpList, TokenList};

/// A set of route classes: bit `i` for class `i` (at most 64 classes, validated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassMask(u64);

impl ClassMask {
    /// The classes of the indices `classes`.
    pub fn of(classes: &[usize]) -> ClassMask {
        ClassMask(classes.iter().fold(0u64, |m, &c| m | (1u64 << (c & 63))))
    }

    /// The set of `class` alone.
    pub fn one(class: ClassId) -> ClassMask {
        ClassMask(1u64 << (class & 63))
    }

    /// Whether `class` is in the set.
    pub fn contains(self, class: ClassId) -> bool {
        self.0 & (1u64 << (class & 63)) != 0
    }

    /// Whether the two sets share a class.
    pub fn intersects(self, other: ClassMask) -> bool {
        self.0 & other.0 != 0
    }

    /// Both sets together.
    pub fn with(self, other: ClassMask) -> ClassMask {
        ClassMask(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The classes in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = ClassId> {
        (0..64u16).filter(move |&c| self.contains(c))
    }
}

/// A paused switch, ready for the request path.
#[derive(Debug)]
pub struct SwitchRule {
    /// Its name.
    pub name: Arc<str>,
    /// The sentence guests get.
    pub message: Arc<str>,
    /// The route classes it pauses.
    pub classes: ClassMask,
    /// Unix seconds after which it no longer applies.
    pub until: Option<i64>,
    /// For a permanent switch a temporary one stands in for: Unix seconds until which it is
    /// replaced (it pauses again from then).
    pub replaced_until: Option<i64>,
    /// `Retry-After` when no `until` is closer.
    pub retry_after: Duration,
}

impl SwitchRule {
    /// Whether it pauses a request of `class` at `now_unix`.
    pub fn applies(&self, class: ClassId, now_unix: i64) -> bool {
        self.applies_to_any(ClassMask::one(class), now_unix)
    }

    /// Whether it pauses, at `now_unix`, a request that may be routed to any of `classes`.
    pub fn applies_to_any(&self, classes: ClassMask, now_unix: i64) -> bool {
        self.classes.intersects(classes)
            && self.until.is_none_or(|u| now_unix < u)
            && self.replaced_until.is_none_or(|r| now_unix >= r)
    }

    /// How long until guests should come back: the time left to `until` (the pause ends
    /// then), or `retry_after` for an open-ended pause.
    pub fn retry_after_at(&self, now_unix: i64) -> Duration {
        match self.until {
            Some(u) => Duration::from_secs(u.saturating_sub(now_unix).max(1).unsigned_abs()),
            None => self.retry_after,
        }
    }
}

/// Everything [`crate::policy::decide::decide`] reads besides the request and the bans.
#[derive(Debug, Default)]
pub struct Rules {
    /// Refused with 403 on every path.
    pub blocklist: Arc<IpList>,
    /// Exempt from limits and automatic bans.
    pub allowlist: Arc<IpList>,
    /// Answered 410 at the edge.
    pub revoked: Arc<TokenList>,
    /// `[[switch]]`es that are paused, in order.
    pub switches: Vec<SwitchRule>,
    /// `[enumeration] token_pattern`, when guessing detection is on: a token that does not
    /// match is malformed.
    pub token_pattern: Option<regex::Regex>,
    /// `[[limit]]`, in order, with their limiters.
    pub limits: Vec<LimitRule>,
}

impl Rules {
    /// Whether `ip` is on the allowlist at `now_unix`.
    pub fn allowlisted(&self, ip: std::net::IpAddr, now_unix: i64) -> bool {
        !self.allowlist.is_empty() && self.allowlist.lookup(ip, now_unix).is_some()
    }
}
