//! Safety without reading messages.
//!
//! - [`franking`]: the server's franking keys, the tag it attaches to each delivered
//!   application message, and the verification of a report;
//! - [`signals`]: per-account activity the server sees anyway — message rate, new 1:1
//!   conversations and how many go unanswered, KeyPackage claims (and how many are never used),
//!   groups created, blocks and reports received, account age — and per-IP registrations;
//! - [`policy`]: the documented mapping from signals to actions (slow down, cool off, suspend),
//!   each with a reason an admin can read. No signal ever looks at content;
//! - [`reports`]: a report's checks, one function each, and its record;
//! - [`blocks`]: blocking and lifting a block.

pub mod blocks;
pub mod franking;
pub mod policy;
pub mod reports;
pub mod signals;

pub use kith_store::SignalKind;
pub use policy::{Action, Safety, SafetyConfig};

use kith_store::{FlagRecord, SignalRecord, StoreError, StoreResult};

use crate::state::AppState;

/// Why the policy refused a request (each becomes `429 rate_limited` or `403 suspended` in
/// `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("slow down: {reason}")]
    SlowDown { reason: String, retry_after: u64 },
    #[error("cooling off: {reason}")]
    CoolingOff { reason: String, retry_after: u64 },
    #[error("this account is suspended: {reason}")]
    Suspended { reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Carries out `action` against `user`'s request: `Ok` to go on, or the refusal to answer.
pub async fn enforce(state: &AppState, user: &str, action: Action) -> Result<(), Refusal> {
    match action {
        Action::Allow => Ok(()),
        Action::SlowDown { retry_after, reason } => {
            state.metrics.safety_actions.get_or_create(&action_label("slow_down")).inc();
            Err(Refusal::SlowDown { reason, retry_after })
        }
        Action::CoolOff { retry_after, reason, new } => {
            if new {
                state.metrics.safety_actions.get_or_create(&action_label("cool_off")).inc();
                flag(state, user, "cool_off", &reason).await;
            }
            Err(Refusal::CoolingOff { reason, retry_after })
        }
        Action::Suspend { reason } => {
            suspend(state, user, &reason).await?;
            Err(Refusal::Suspended { reason })
        }
    }
}

/// Suspends `user` with a reason an admin can read, and drops its cached credentials.
pub async fn suspend(state: &AppState, user: &str, reason: &str) -> StoreResult<()> {
    set_suspension(&*state.store, user, Some(reason), state.now()).await?;
    state.metrics.safety_actions.get_or_create(&action_label("suspend")).inc();
    state.auth_cache.forget_account(user);
    // Its open push connections end here; other nodes hear it from the store.
    if let Some(account) = state.store.account_devices(user).await? {
        for d in account.devices {
            state.hub.disconnect(d.device_id);
        }
    }
    tracing::warn!(reason, "account suspended by the safety policy");
    Ok(())
}

/// Suspends `user` (`Some(reason)`) or lifts its suspension (`None`), and records the action
/// for review: what the policy does and what `kithd admin suspend`/`unsuspend` does, running
/// server or not (a running one's connections of the account end when they next check).
pub async fn set_suspension(
    store: &dyn kith_store::Store,
    user: &str,
    reason: Option<&str>,
    now: kith_store::Millis,
) -> kith_store::StoreResult<()> {
    store.set_suspended(user, reason.map(str::to_string)).await?;
    let record = FlagRecord {
        username: user.to_string(),
        action: if reason.is_some() { "suspend" } else { "unsuspend" }.to_string(),
        reason: reason.unwrap_or("lifted").to_string(),
        created_at: now,
    };
    if let Err(e) = store.add_flag(record).await {
        tracing::error!(error = %e, "cannot record a safety action");
    }
    Ok(())
}

async fn flag(state: &AppState, user: &str, action: &str, reason: &str) {
    let record = FlagRecord {
        username: user.to_string(),
        action: action.to_string(),
        reason: reason.to_string(),
        created_at: state.now(),
    };
    if let Err(e) = state.store.add_flag(record).await {
        tracing::error!(error = %e, "cannot record a safety action");
    }
}

fn action_label(action: &'static str) -> crate::metrics::ActionLabel {
    crate::metrics::ActionLabel { action }
}

/// Records that `source` blocked or reported `target`. It counts toward the target's
/// reputation only when qualified: `source` is not a brand-new account, and the target wrote
/// to it (`proven` for a verified report, looked up for a block). A repeat changes nothing.
/// At a threshold the target is flagged for an admin — never suspended: throwaway accounts
/// cannot silence anyone.
pub async fn record_signal(
    state: &AppState,
    source: &str,
    target: &str,
    kind: SignalKind,
    proven: bool,
) -> StoreResult<()> {
    let now = state.now();
    let young = state.safety.config.young_account_hours * signals::HOUR;
    let established = state
        .store
        .account_info(source)
        .await?
        .is_some_and(|a| a.created_at.saturating_add(young) <= now);
    let qualified = established && (proven || state.store.has_written_to(target, source).await?);
    let record = SignalRecord {
        target: target.to_string(),
        source: source.to_string(),
        kind,
        qualified,
        created_at: now,
    };
    let Some(count) = state.store.add_signal(record).await? else { return Ok(()) };
    if qualified && let Some(reason) = state.safety.reputation_flag(kind, count) {
        state.metrics.safety_actions.get_or_create(&action_label("flag")).inc();
        flag(state, target, "review", &reason).await;
    }
    Ok(())
}
