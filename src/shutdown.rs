//! Stopping: one [`Shutdown`] value is handed to every task, and one [`Stop`] turns it on.
//!
//! A task selects on [`Shutdown::requested`] next to its work; it never holds a guard of the
//! channel across an await, and a shutdown requested before a task started is seen at once.

use tokio::sync::watch;

/// What every task watches: whether the shield is stopping. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The switch that stops every task holding a `Shutdown` of the same pair.
#[derive(Debug, Clone)]
pub struct Stop {
    tx: watch::Sender<bool>,
}

/// A fresh pair: nothing is stopping yet.
pub fn pair() -> (Stop, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Stop { tx }, Shutdown { rx })
}

impl Stop {
    /// Asks every task to stop (again is harmless).
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    /// The underlying sender (`send(true)` stops too).
    pub fn sender(&self) -> watch::Sender<bool> {
        self.tx.clone()
    }
}

impl Shutdown {
    /// Resolves once a stop was asked for (or every [`Stop`] is gone).
    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        // The guard wait_for returns is dropped here, so no caller holds it across an await.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_one_stop_even_one_made_after_it() {
        let (stop, shutdown) = pair();
        let early = shutdown.clone();
        let waiting = tokio::spawn(async move { early.requested().await });
        assert!(!shutdown.is_requested());
        stop.stop();
        waiting.await.unwrap();
        let late = shutdown.clone();
        late.requested().await;
        assert!(late.is_requested());
    }
}
