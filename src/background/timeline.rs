//! Keeps the timeline's per-minute rows: every few seconds, each minute of the request counters
//! that is over is copied into the timeline (`telemetry/timeline.rs`) before its slot in the
//! counters is reused. The request path counts each minute once, for the status and the alerts;
//! the timeline reads those counts here, off the request path.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::shutdown::Shutdown;
use crate::telemetry::Telemetry;

/// How often minutes are copied (well within the counters' 16 minutes).
pub const SETTLE_EVERY: Duration = Duration::from_secs(10);

/// Copies finished minutes every [`SETTLE_EVERY`] until `shutdown`.
pub async fn run(telemetry: Arc<Telemetry>, clock: SharedClock, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(SETTLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        telemetry
            .timeline
            .settle(&telemetry.recent.rates, clock.now().unix_ms());
    }
}
