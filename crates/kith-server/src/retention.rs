//! The retention sweep: ciphertext nobody acknowledged is deleted after `retention_days`, and
//! stories at their expiry.

use crate::state::AppState;

/// One sweep: deletes every message older than the retention limit and every story past its
/// expiry, then makes the deleted bytes unrecoverable from the store's files. Returns how many
/// messages went.
pub async fn sweep_once(state: &AppState) -> Result<u64, kith_store::StoreError> {
    let now = state.now();
    let cutoff = now.saturating_sub(state.config.retention_millis());
    state.safety.prune(now);
    state.franking.reload(&*state.store).await?;
    let gone = state.store.sweep_expired(cutoff, now).await?;
    state.queues.forget_all();
    if gone > 0 {
        tracing::info!(messages = gone, "retention sweep deleted expired or undelivered messages");
        state.metrics.retention_deleted.inc_by(gone);
        state.store.compact().await?;
    }
    Ok(gone)
}

/// Sweeps every `sweep_interval` until shutdown.
pub async fn sweep_forever(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(state.config.sweep_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = sweep_once(&state).await {
                    tracing::warn!(error = %e, "retention sweep failed; will retry");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
