//! Blocking: held by the server for every kind of conversation (see `crate::delivery`),
//! invisibly — the blocked account is not told, and what it is answered does not change.
//!
//! - [`block`]: never oneself; the block counts toward the blocked account's reputation
//!   (`super::record_signal`);
//! - [`unblock`]: the signal is withdrawn, and the invitations withheld during the block arrive
//!   (what the blocked account sent meanwhile does not).

use kith_store::StoreError;

use super::SignalKind;
use crate::delivery::entries;
use crate::state::AppState;

/// Why a block was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("you cannot block yourself")]
    Yourself,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `me` blocks `username`: the accounts `me` now blocks.
pub async fn block(state: &AppState, me: &str, username: &str) -> Result<Vec<String>, BlockError> {
    if username == me {
        return Err(BlockError::Yourself);
    }
    state.store.block(me, username, state.now()).await?;
    state.fanout.forget_blocking(username);
    super::record_signal(state, me, username, SignalKind::Block, false).await?;
    Ok(state.store.blocked_by(me).await?)
}

/// `me` lifts its block of `username`: the accounts `me` still blocks.
pub async fn unblock(
    state: &AppState,
    me: &str,
    username: &str,
) -> Result<Vec<String>, StoreError> {
    state.store.unblock(me, username).await?;
    state.fanout.forget_blocking(username);
    // A lifted block no longer counts against the account.
    state.store.withdraw_signal(username, me, SignalKind::Block).await?;
    let released = state.store.release_withheld(me, username).await?;
    if !released.is_empty() {
        entries::accepted(state, &released);
    }
    state.store.blocked_by(me).await
}
