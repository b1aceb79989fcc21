//! The task that sends expiry notices (SPEC §12: `key.expiring` 7 days and
//! a day ahead, `key.expired`): every second it works the store's notice
//! schedule through [`KeyAdmin::send_due_expiry_notices`], which writes
//! each notice as an audit event, and so an outbox event the webhook
//! worker delivers. Every node runs it; the schedule's claims and the
//! record's marker keep each notice to one node and one send.
//!
//! [`KeyAdmin::send_due_expiry_notices`]: cloro_keystore::KeyAdmin::send_due_expiry_notices

use std::sync::Weak;
use std::time::Duration;

use cloro_keystore::LogLimit;

use crate::App;
use crate::background::{StoppableTask, stopping};

/// How often the schedule is read.
const TICK: Duration = Duration::from_secs(1);
/// Schedule entries handled per tick at most.
const PER_TICK: usize = 200;

/// Spawns the task. It holds the app weakly, and strongly only while it
/// works the schedule; stopping it waits for that to end.
pub(crate) fn spawn(app: Weak<App>) -> StoppableTask {
    StoppableTask::spawn(|mut stopped| async move {
        static FAILED: LogLimit = LogLimit::per_second();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopping(&mut stopped) => return,
            }
            let Some(app) = app.upgrade() else {
                return;
            };
            let now = app.clock().now();
            match app.admin().send_due_expiry_notices(now, PER_TICK).await {
                Ok(0) => {}
                Ok(sent) => tracing::info!(sent, "expiry notices sent"),
                Err(error) => {
                    if let Some(suppressed) = FAILED.admit() {
                        tracing::warn!(%error, suppressed, "expiry notices could not be sent; tried again in a second");
                    }
                }
            }
        }
    })
}
