//! The front door's admission: who may open a connection, and what makes room.
//!
//! Every guest connection, on either listener, takes a [`Ticket`] when it is accepted and
//! gives it back when its socket closes (after any lingering). A ticket counts toward:
//!
//! - `max_connections_per_ip`: open connections per client, by the TCP peer's key (IPv4
//!   address or IPv6 network; [`crate::policy::connections`]); trusted proxies are exempt;
//! - `max_connections`: all open connections. At the cap, the idle connection that has been
//!   idle longest (no request in flight: between keep-alive requests, or not yet sent one) is
//!   told to close to make room; only when none is idle is the new connection refused. A
//!   connection with a request in flight is never the one closed. A connection told to close
//!   may take a moment to go, so up to [`EVICTION_SLACK`] more than `max_connections` can be
//!   open meanwhile, never more.
//!
//! Refused connections are closed at once, without reading them: the accept loop never waits,
//! so a new connection never sits in the kernel's backlog behind idle ones.
//!
//! Idle order is kept in a queue with lazy deletion: a connection is pushed when it becomes
//! idle (so the front is the longest idle), and an entry whose connection has been busy or
//! closed since is skipped when met. The queue is compacted when stale entries outnumber the
//! open connections, so it stays within a small multiple of them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::policy::client_ip::ClientKey;
use crate::policy::connections::{Counted, PerClient};
use crate::telemetry::meters::{ConnectionCounts, Listener, Protocol, Refusal};
use crate::telemetry::Telemetry;

/// Most connections above `max_connections` while connections told to make room are closing.
pub const EVICTION_SLACK: usize = 64;

// The state word of a connection: requests in flight in the low 16 bits, a generation (bumped
// each time it becomes idle) above them, and two flags at the top.
const IN_FLIGHT: u64 = 0xffff;
const GENERATION: u64 = 1 << 16;
/// Told to close to make room.
const EVICTED: u64 = 1 << 63;
/// Done serving HTTP (closing or lingering): never idle again.
const RETIRED: u64 = 1 << 62;

/// One connection, as the door sees it: whether it is idle, and how to tell it to close.
#[derive(Debug, Default)]
pub(crate) struct ConnSlot {
    state: AtomicU64,
    close: Notify,
    /// The shield's answer said `Connection: close`: linger after it (unread bytes may follow).
    linger: AtomicBool,
}

impl ConnSlot {
    /// Resolves once the door told this connection to close (to make room).
    pub(crate) async fn told_to_close(&self) {
        self.close.notified().await;
    }

    /// Whether the door told this connection to close.
    #[cfg(test)]
    pub(crate) fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) & EVICTED != 0
    }

    /// Marks that the connection ends after an answer that may leave unread bytes behind.
    pub(crate) fn linger_after(&self) {
        self.linger.store(true, Ordering::Relaxed);
    }

    /// Whether the connection should linger when it ends.
    pub(crate) fn lingers(&self) -> bool {
        self.linger.load(Ordering::Relaxed)
    }
}

/// The idle queue: (connection, its state word when it became idle), longest idle first.
type IdleQueue = VecDeque<(Arc<ConnSlot>, u64)>;

/// Admission for the guest listeners: the counts and the idle queue.
pub(crate) struct Door {
    max: usize,
    slack: usize,
    open: AtomicUsize,
    per_client: PerClient,
    idle: Mutex<IdleQueue>,
    lingering: AtomicUsize,
    max_lingering: usize,
    telemetry: Arc<Telemetry>,
}

/// A client's key and its `max_connections_per_ip`, for a peer that is not a trusted proxy.
pub(crate) type PerIp = Option<(ClientKey, usize)>;

impl Door {
    /// A door for at most `max` connections (fixed at start, like the listen addresses).
    pub(crate) fn new(max: usize, telemetry: Arc<Telemetry>) -> Door {
        let max = max.max(1);
        Door {
            max,
            slack: EVICTION_SLACK.min(max),
            open: AtomicUsize::new(0),
            per_client: PerClient::default(),
            idle: Mutex::new(VecDeque::new()),
            lingering: AtomicUsize::new(0),
            // Lingering connections keep their tickets: at most a quarter of the connections
            // may be spent on them, so lingering can never fill the door.
            max_lingering: (max / 4).max(1),
            telemetry,
        }
    }

    fn counts(&self) -> &ConnectionCounts {
        &self.telemetry.meters.connections
    }

    fn queue(&self) -> MutexGuard<'_, IdleQueue> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection on `listener`, counted for its client when `per_ip` names one;
    /// `Err` says why it must be closed at once (and counts it).
    pub(crate) fn admit(
        self: &Arc<Self>,
        per_ip: PerIp,
        listener: Listener,
        protocol: Protocol,
    ) -> Result<Ticket, Refusal> {
        let result = self.try_admit(per_ip, listener, protocol);
        if let Err(refusal) = result {
            self.counts().refused(refusal);
        }
        result
    }

    fn try_admit(
        self: &Arc<Self>,
        per_ip: PerIp,
        listener: Listener,
        protocol: Protocol,
    ) -> Result<Ticket, Refusal> {
        let counted = match per_ip {
            Some((key, limit)) => Some(self.per_client.open(key, limit).ok_or(Refusal::PerIp)?),
            None => None,
        };
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.max && !(open < self.max + self.slack && self.make_room()) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            if let Some(c) = counted {
                self.per_client.close(c);
            }
            return Err(Refusal::Max);
        }
        let slot = Arc::new(ConnSlot::default());
        // Idle from the start: a connection that never sends a request is idle too.
        self.push_idle(&slot, 0);
        self.counts().opened(listener, protocol);
        Ok(Ticket {
            door: self.clone(),
            counted,
            slot,
            listener,
            protocol,
        })
    }

    /// Tells the longest idle connection to close; false when none is idle.
    fn make_room(&self) -> bool {
        let mut queue = self.queue();
        while let Some((slot, seen)) = queue.pop_front() {
            // Still idle exactly as it was queued (no request since, not retired or told to
            // close): claim it, so a request starting now cannot make it busy unseen.
            if slot
                .state
                .compare_exchange(seen, seen | EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                drop(queue);
                slot.close.notify_one();
                self.counts().idle_closed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    fn push_idle(&self, slot: &Arc<ConnSlot>, state: u64) {
        let mut queue = self.queue();
        queue.push_back((slot.clone(), state));
        // Stale entries (connections busy or gone since) are skipped when met; drop them when
        // they outnumber the open connections, so the queue stays small.
        if queue.len() > 2 * self.open.load(Ordering::Relaxed) + 64 {
            queue.retain(|(slot, seen)| slot.state.load(Ordering::Acquire) == *seen);
        }
    }

    /// A request of `slot`'s connection started; the [`Busy`] ends it when dropped.
    pub(crate) fn begin(self: &Arc<Self>, slot: &Arc<ConnSlot>) -> Busy {
        slot.state.fetch_add(1, Ordering::AcqRel);
        Busy {
            door: self.clone(),
            slot: slot.clone(),
        }
    }

    fn end(&self, slot: &Arc<ConnSlot>) {
        let mut now = slot.state.load(Ordering::Acquire);
        loop {
            if now & IN_FLIGHT == 0 {
                return;
            }
            let mut next = now - 1;
            let idle = next & IN_FLIGHT == 0 && next & (EVICTED | RETIRED) == 0;
            if idle {
                // A new generation: entries queued for an earlier idle spell are stale now.
                next += GENERATION;
            }
            match slot
                .state
                .compare_exchange(now, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if idle {
                        self.push_idle(slot, next);
                    }
                    return;
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Takes a lingering place, if fewer than the bound are lingering.
    pub(crate) fn try_linger(self: &Arc<Self>) -> Option<Lingering> {
        let taken = self
            .lingering
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_lingering).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.counts().linger_skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.counts().lingering.fetch_add(1, Ordering::Relaxed);
        Some(Lingering { door: self.clone() })
    }

    /// Connections open now (tickets held).
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// `max_connections`.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// A connection's place at the door, given back when dropped (when its socket closes).
pub(crate) struct Ticket {
    door: Arc<Door>,
    counted: Option<Counted>,
    slot: Arc<ConnSlot>,
    listener: Listener,
    protocol: Protocol,
}

impl Ticket {
    /// The connection's slot (idle state, close signal).
    pub(crate) fn slot(&self) -> &Arc<ConnSlot> {
        &self.slot
    }

    /// The door it came through.
    pub(crate) fn door(&self) -> &Arc<Door> {
        &self.door
    }

    /// The connection now speaks `protocol` (after the TLS handshake).
    pub(crate) fn speaks(&mut self, protocol: Protocol) {
        let counts = self.door.counts();
        counts.closed(self.listener, self.protocol);
        counts.opened(self.listener, protocol);
        self.protocol = protocol;
    }

    /// Done serving HTTP: the connection is closing or lingering and is never idle again.
    pub(crate) fn retire(&self) {
        self.slot.state.fetch_or(RETIRED, Ordering::AcqRel);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.retire();
        self.door.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(c) = self.counted {
            self.door.per_client.close(c);
        }
        self.door.counts().closed(self.listener, self.protocol);
    }
}

/// A request in flight on a connection; dropping it (when the answer's body is done) makes the
/// connection idle again.
pub(crate) struct Busy {
    door: Arc<Door>,
    slot: Arc<ConnSlot>,
}

impl Busy {
    /// The connection's slot.
    pub(crate) fn slot(&self) -> &ConnSlot {
        &self.slot
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.door.end(&self.slot);
    }
}

/// A lingering place, given back when dropped.
pub(crate) struct Lingering {
    door: Arc<Door>,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        self.door.lingering.fetch_sub(1, Ordering::AcqRel);
        self.door.counts().lingering.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log::{Captured, Destination, LogConfig, LogSink};

    fn door(max: usize) -> Arc<Door> {
        let sink = LogSink::start_with(
            &LogConfig::default(),
            Destination::Memory(Captured::new()),
            16,
        )
        .unwrap();
        Arc::new(Door::new(
            max,
            Arc::new(Telemetry::new(sink.handle(), None)),
        ))
    }

    fn client(ip: &str) -> PerIp {
        Some((ClientKey::new(ip.parse().unwrap(), 64), 2))
    }

    fn admit(d: &Arc<Door>, per_ip: PerIp) -> Result<Ticket, Refusal> {
        d.admit(per_ip, Listener::Http, Protocol::Http1)
    }

    #[test]
    fn a_client_past_its_limit_is_refused_and_others_are_not() {
        let d = door(100);
        let _a = admit(&d, client("192.0.2.1")).unwrap();
        let _b = admit(&d, client("192.0.2.1")).unwrap();
        assert_eq!(admit(&d, client("192.0.2.1")).err(), Some(Refusal::PerIp));
        assert!(admit(&d, client("192.0.2.2")).is_ok());
        // A trusted proxy is not counted per client.
        let proxies: Vec<_> = (0..5).map(|_| admit(&d, None).unwrap()).collect();
        assert_eq!(proxies.len(), 5);
        let counts = &d.telemetry.meters.connections;
        assert_eq!(
            counts.refused[Refusal::PerIp.index()].load(Ordering::Relaxed),
            1
        );
        drop(_a);
        assert!(admit(&d, client("192.0.2.1")).is_ok());
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_is_told_to_close() {
        let d = door(3);
        let t: Vec<Ticket> = (0..3).map(|_| admit(&d, None).unwrap()).collect();
        // The first one serves a request and becomes idle again: now the second has been idle
        // longest.
        drop(d.begin(t[0].slot()));
        let fourth = admit(&d, None).unwrap();
        assert!(t[1].slot().is_evicted());
        assert!(!t[0].slot().is_evicted() && !t[2].slot().is_evicted());
        // The next in line is the third, then the first.
        let _fifth = admit(&d, None).unwrap();
        assert!(t[2].slot().is_evicted());
        assert!(!fourth.slot().is_evicted());
        assert_eq!(
            d.telemetry
                .meters
                .connections
                .idle_closed
                .load(Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn a_connection_with_a_request_in_flight_is_never_told_to_close() {
        let d = door(2);
        let t: Vec<Ticket> = (0..2).map(|_| admit(&d, None).unwrap()).collect();
        let busy: Vec<Busy> = t.iter().map(|t| d.begin(t.slot())).collect();
        assert_eq!(admit(&d, None).err(), Some(Refusal::Max));
        assert!(t.iter().all(|t| !t.slot().is_evicted()));
        assert_eq!(d.open(), 2);
        // One answer is done: that connection is idle, and makes room.
        drop(busy.into_iter().next());
        assert!(admit(&d, None).is_ok());
        assert!(t[0].slot().is_evicted());
        assert!(!t[1].slot().is_evicted());
    }

    #[test]
    fn retired_connections_and_closed_ones_make_no_room() {
        let d = door(1);
        let t = admit(&d, None).unwrap();
        t.retire();
        assert_eq!(admit(&d, None).err(), Some(Refusal::Max));
        drop(t);
        assert!(admit(&d, None).is_ok());
    }

    #[test]
    fn the_door_never_holds_more_than_the_cap_and_its_slack() {
        let d = door(4);
        let mut held = Vec::new();
        for _ in 0..100 {
            if let Ok(t) = admit(&d, None) {
                held.push(t);
            }
        }
        // Every idle one was told to close, but none has gone yet.
        assert_eq!(d.open(), 4 + EVICTION_SLACK.min(4));
    }

    #[test]
    fn a_refusal_at_the_cap_gives_back_the_clients_count() {
        let d = door(1);
        let t = admit(&d, None).unwrap();
        let _busy = d.begin(t.slot());
        assert_eq!(admit(&d, client("192.0.2.9")).err(), Some(Refusal::Max));
        let key = ClientKey::new("192.0.2.9".parse().unwrap(), 64);
        assert_eq!(d.per_client.open_of(key), 0);
    }

    #[test]
    fn the_idle_queue_stays_small_under_many_requests() {
        let d = door(10);
        let t: Vec<Ticket> = (0..10).map(|_| admit(&d, None).unwrap()).collect();
        for _ in 0..10_000 {
            for t in &t {
                drop(d.begin(t.slot()));
            }
        }
        assert!(d.queue().len() <= 2 * 10 + 64 + 1, "{}", d.queue().len());
    }

    #[test]
    fn lingering_is_bounded_to_a_quarter_of_the_connections() {
        let d = door(8);
        let a = d.try_linger().unwrap();
        let b = d.try_linger().unwrap();
        assert!(d.try_linger().is_none());
        drop(a);
        let _c = d.try_linger().unwrap();
        drop(b);
        let counts = &d.telemetry.meters.connections;
        assert_eq!(counts.lingering.load(Ordering::Relaxed), 1);
        assert_eq!(counts.linger_skipped.load(Ordering::Relaxed), 1);
    }
}
