//! Keeps `/readyz` honest when no guest traffic flows: every 2 s without a recent answer from
//! the app, the probe tries to open a connection to it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshots;
use crate::telemetry::meters::Liveness;
use crate::telemetry::Telemetry;

/// How recent the app's last sign of life must be for `/readyz`.
pub const READY_WINDOW_MS: i64 = 10_000;

/// Probes the app until `shutdown`: reads the upstream address from `snapshots`, notes a
/// connection it accepted in the telemetry's liveness.
pub async fn run(
    snapshots: Arc<Snapshots>,
    telemetry: Arc<Telemetry>,
    clock: SharedClock,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let liveness: &Liveness = &telemetry.liveness;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        if liveness.silent_for_ms(clock.now().unix_ms()) < READY_WINDOW_MS / 2 {
            continue;
        }
        let authority = snapshots
            .load()
            .loaded
            .config
            .server
            .upstream
            .authority
            .clone();
        let connect = tokio::net::TcpStream::connect(authority);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
            liveness.set(clock.now().unix_ms());
        }
    }
}
