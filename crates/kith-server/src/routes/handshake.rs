//! Commits and leave proposals: validated against the server's copy of the group, one commit
//! per epoch.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kith_proto::*;
use kith_store::{GroupUpdate, NewMessage, StoreError};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sha2::Digest as _;

use crate::delivery::{self, Fanout, Post};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body};
use crate::groups::state::{Applied, Tracked};
use crate::groups::{self, policy};
use crate::mls;
use crate::routes::conversations::{accepted, conversation_id};
use crate::state::AppState;

fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidMessage, why)
}

pub(crate) fn stale(current: u64) -> ApiError {
    ApiError::new(
        ErrorCode::StaleEpoch,
        format!("the group has moved on to epoch {current}; fetch what you missed and try again"),
    )
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "group state update failed");
    ApiError::new(ErrorCode::Internal, "internal error")
}

/// Where a validated handshake goes and what it changes.
struct Outcome {
    /// The epoch and revision the change was validated against.
    expected: (u64, u64),
    tracked: Tracked,
    members: Vec<u64>,
    messages: Vec<NewMessage>,
    /// Devices the change added, and their accounts (for the safety signals).
    added: u32,
    added_accounts: Vec<String>,
    /// A change that does not shape the group — a member's key update, a 1:1's settings — held
    /// to the queue cap (anyone in a conversation could otherwise flood the others' queues).
    own_update: bool,
}

/// Submit a commit (with its Welcome when it adds members) or a proposal to leave.
#[utoipa::path(post, path = "/v1/conversations/{id}/handshake", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, lowercase hex", pattern = "^([0-9a-f]{2}){16,32}$")),
    request_body = HandshakeRequest,
    responses(
        (status = 202, description = "Validated, stored and queued", body = HandshakeResponse),
        (status = 200, description = "The same bytes this device posted before, applied then: nothing is stored or sent again (a client whose answer was lost posts again); `message_id` is 0", body = HandshakeResponse),
        (status = 400, description = "invalid_message, invalid_conversation_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member, not_admin, forbidden", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
        (status = 409, description = "stale_epoch, group_full", body = ErrorBody),
    ))]
pub async fn handshake(
    State(state): State<AppState>,
    me: AuthedDevice,
    Path(id): Path<String>,
    Body(req): Body<HandshakeRequest>,
) -> ApiResult<(StatusCode, Json<HandshakeResponse>)> {
    let started = std::time::Instant::now();
    let id = conversation_id(&id)?;
    // The body first: nothing of the group is loaded for a message that is not a handshake.
    let message = MlsMessageIn::tls_deserialize_exact(&req.message.0)
        .map_err(|_| invalid("the handshake is not an MLS message"))?;
    if message.wire_format() != WireFormat::PublicMessage {
        return Err(invalid("commits and proposals must be sent as MLS PublicMessages"));
    }
    let protocol =
        message.try_into_protocol_message().map_err(|_| invalid("not an MLS protocol message"))?;
    if protocol.group_id().as_slice() != id.as_bytes() {
        return Err(invalid("the handshake belongs to another conversation"));
    }
    if !protocol.is_handshake_message() {
        return Err(invalid("application messages go to /v1/conversations/{id}/messages"));
    }
    let digest: [u8; 32] = sha2::Sha256::digest(&req.message.0).into();
    let route = match delivery::member_route(&state, &me, id.as_bytes()).await {
        Ok(route) => route,
        // A request to leave takes the device out of delivery at once: its repeat comes
        // from a device that is no longer listed.
        Err(e) if e.code == ErrorCode::NotAMember => {
            // Held to the change limit like any handshake: the look costs a group's load.
            delivery::check_rate(&state, &me, id.as_bytes(), Post::Change { story: false }).await?;
            let stored = state.store.group_state(id.as_bytes()).await?;
            let tracked = stored.map(|s| Tracked::load(id.as_bytes(), &s.state)).transpose()?;
            return match tracked.and_then(|t| t.applied_by(me.device_id, &digest)) {
                Some(done) => Ok(repeated(done, state.now())),
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let story = route.poster.is_some();
    delivery::check_rate(&state, &me, id.as_bytes(), Post::Change { story }).await?;
    let _guard = state.locks.lock(id.as_bytes()).await;
    let stored = state
        .store
        .group_state(id.as_bytes())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownConversation, "no such conversation"))?;
    let mut tracked = Tracked::load(id.as_bytes(), &stored.state)?;
    // Posted again by a client whose answer was lost: it was applied, and is not again. Looked
    // at before membership: a repeat of a request to leave that waited for the lock while the
    // first was applied comes from a device no longer in delivery.
    if let Some(done) = tracked.applied_by(me.device_id, &digest) {
        return Ok(repeated(done, state.now()));
    }
    let members_before =
        state.store.conversation_route(id.as_bytes()).await?.map(|r| r.members).unwrap_or_default();
    if !members_before.contains(&me.device_id) {
        return Err(ApiError::new(
            ErrorCode::NotAMember,
            "this device is not in that conversation",
        ));
    }
    let epoch = protocol.epoch().as_u64();
    if epoch < tracked.epoch() {
        return Err(stale(tracked.epoch()));
    }
    if epoch > tracked.epoch() {
        return Err(invalid("the handshake is for an epoch the group has not reached"));
    }
    let crypto = OpenMlsRustCrypto::default();
    let processed = tracked.group.process_message(crypto.crypto(), protocol).map_err(|e| {
        // OpenMLS's own words stay in the log: clients get the stable code and a fixed text.
        tracing::debug!(error = %e, "a handshake does not verify");
        invalid("the handshake does not verify against the group")
    })?;
    let Sender::Member(sender_leaf) = *processed.sender() else {
        return Err(invalid("only members may send handshakes"));
    };
    let sender = tracked.leaf(sender_leaf).ok_or_else(|| invalid("unknown sender"))?;
    if sender.signature_key != me.credential_key {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the handshake is signed by another member's key",
        ));
    }
    let now = state.now();
    let others: Vec<u64> = members_before.iter().copied().filter(|d| *d != me.device_id).collect();
    let handshake = NewMessage {
        conversation: id.as_bytes().to_vec(),
        sender_device: me.device_id,
        kind: EntryKind::Message,
        data: req.message.0,
        recipients: others,
        now,
        expires_at: None,
        withheld: vec![],
    };
    let aad = processed.aad().to_vec();
    let outcome = match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            commit(
                &state,
                tracked,
                *staged,
                &aad,
                &sender.username,
                me.kind,
                handshake,
                req.welcome,
                (stored.epoch, stored.revision),
            )
            .await?
        }
        ProcessedMessageContent::ProposalMessage(proposal) => {
            let Proposal::Remove(remove) = proposal.proposal() else {
                return Err(invalid("only a proposal to leave may be sent on its own"));
            };
            if remove.removed() != sender_leaf {
                return Err(invalid("only a proposal to leave may be sent on its own"));
            }
            tracked.group.add_proposal(&tracked.storage, *proposal).map_err(internal)?;
            // The leaver gets nothing more from now on, before anyone commits its removal:
            // the next commit must include it (see `commit`).
            let members = groups::delivery_members(&*state.store, &tracked).await?;
            Outcome {
                expected: (stored.epoch, stored.revision),
                tracked,
                members,
                messages: vec![handshake],
                added: 0,
                added_accounts: Vec::new(),
                own_update: false,
            }
        }
        _ => return Err(invalid("a handshake is a commit or a proposal")),
    };

    // The queue cap, for what a member could flood others with: its own key updates.
    if outcome.own_update {
        let staying: Vec<u64> =
            outcome.members.iter().copied().filter(|d| *d != me.device_id).collect();
        delivery::require_room(&state, &me, &staying).await?;
    }
    let epoch = outcome.tracked.epoch();
    let member_count = outcome.members.len();
    let members = u32::try_from(member_count).unwrap_or(u32::MAX);
    outcome.tracked.note_applied(&Applied { device: me.device_id, digest, epoch, members })?;
    let (added, added_accounts) = (outcome.added, outcome.added_accounts);
    let recipients: Vec<Vec<u64>> = outcome.messages.iter().map(|m| m.recipients.clone()).collect();
    let ids = state
        .store
        .update_group(GroupUpdate {
            conversation: id.as_bytes().to_vec(),
            expected_epoch: outcome.expected.0,
            expected_revision: outcome.expected.1,
            epoch,
            state: outcome.tracked.save()?,
            members: outcome.members,
            messages: outcome.messages,
        })
        .await
        .map_err(|e| match e {
            StoreError::StaleEpoch => stale(epoch),
            other => other.into(),
        })?;
    // Members changed: the next send must see the new list.
    state.routes.forget_route(id.as_bytes());
    for r in &recipients {
        accepted(&state, r);
    }
    if added > 0 {
        state.safety.note_used(&me.username, &added_accounts, added, now);
    }
    state.metrics.handshake_seconds.observe(started.elapsed().as_secs_f64());
    Ok((
        StatusCode::ACCEPTED,
        Json(HandshakeResponse {
            message_id: ids.first().copied().unwrap_or_default(),
            epoch,
            server_time: now,
            members,
        }),
    ))
}

/// The answer to a handshake this device posted before and the server applied (see
/// [`Applied`]): `200` rather than `202`, nothing stored or sent again, `message_id` 0.
fn repeated(done: Applied, now: u64) -> (StatusCode, Json<HandshakeResponse>) {
    let answer = HandshakeResponse {
        message_id: 0,
        epoch: done.epoch,
        server_time: now,
        members: done.members,
    };
    (StatusCode::OK, Json(answer))
}

/// The members whose request to leave the next commit must include. A client that did not see
/// a request (one its members' clients could not read, say) learns here what to complete.
#[utoipa::path(get, path = "/v1/conversations/{id}/pending-leaves", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, lowercase hex", pattern = "^([0-9a-f]{2}){16,32}$")),
    responses(
        (status = 200, body = PendingLeaves),
        (status = 400, description = "invalid_conversation_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
    ))]
pub async fn pending_leaves(
    State(state): State<AppState>,
    me: AuthedDevice,
    Path(id): Path<String>,
) -> ApiResult<Json<PendingLeaves>> {
    let id = conversation_id(&id)?;
    // A member that asked to leave is out of delivery but may still ask.
    let stored = state
        .store
        .group_state(id.as_bytes())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownConversation, "no such conversation"))?;
    let tracked = Tracked::load(id.as_bytes(), &stored.state)?;
    let mine = tracked.leaves().into_iter().any(|l| l.signature_key == me.credential_key);
    if !mine {
        return Err(ApiError::new(
            ErrorCode::NotAMember,
            "this device is not in that conversation",
        ));
    }
    let leaves = groups::pending_leaves(&tracked)?
        .into_iter()
        .filter_map(|leaf| {
            tracked
                .leaf(LeafNodeIndex::new(leaf))
                .map(|l| PendingLeave { leaf, username: l.username })
        })
        .collect();
    Ok(Json(PendingLeaves { leaves }))
}

#[allow(clippy::too_many_arguments)]
async fn commit(
    state: &AppState,
    mut tracked: Tracked,
    staged: StagedCommit,
    aad: &[u8],
    committer: &str,
    committer_kind: AccountKind,
    handshake: NewMessage,
    welcome: Option<B64>,
    expected: (u64, u64),
) -> ApiResult<Outcome> {
    policy::check_commit(&tracked, committer, &staged, aad, state.config.max_group_size)?;
    // A member's request to leave is never lost to a commit that raced it: a commit that
    // leaves out a pending leave is stale, and its author catches up (getting the proposal)
    // and commits again.
    let removed: BTreeSet<u32> =
        staged.remove_proposals().map(|rm| rm.remove_proposal().removed().u32()).collect();
    if groups::pending_leaves(&tracked)?.iter().any(|leaf| !removed.contains(leaf)) {
        return Err(ApiError::new(
            ErrorCode::StaleEpoch,
            "a member asked to leave and this commit does not include it; fetch what you \
             missed and commit again",
        ));
    }
    let added_accounts: Vec<String> = staged
        .add_proposals()
        .filter_map(|a| {
            groups::state::identity(a.add_proposal().key_package().leaf_node().credential())
        })
        .collect();
    if tracked.meta().is_some_and(|m| m.kind == GroupType::Story) {
        groups::check_story_audience(state, committer, &added_accounts).await?;
    }
    if committer_kind == AccountKind::Business {
        for add in staged.add_proposals() {
            let leaf = add.add_proposal().key_package().leaf_node();
            let added = groups::state::identity(leaf.credential()).unwrap_or_default();
            crate::businesses::refuse_person(state, &added).await?;
        }
    }
    let adds = staged.add_proposals().count() > 0;
    // What shapes a group and must get through even to a full queue: an admin's adds, removes
    // and changes of the group's context (its admins, its settings), and completed leaves (with
    // the heir they name). Everything else — key updates, either person's change of a 1:1's
    // settings — waits for room, so nobody, a stranger in a 1:1 included, can fill another's
    // queue with commits.
    let by_admin =
        tracked.meta().is_some_and(|m| m.kind != GroupType::Direct && m.is_admin(committer));
    let context_change = staged
        .queued_proposals()
        .any(|p| matches!(p.proposal(), Proposal::GroupContextExtensions(_)));
    let own_update =
        !adds && staged.remove_proposals().next().is_none() && !(by_admin && context_change);
    let keys_before: BTreeSet<Vec<u8>> =
        tracked.leaves().into_iter().map(|l| l.signature_key).collect();
    tracked.group.merge_commit(&tracked.storage, staged).map_err(internal)?;
    let leaves = tracked.leaves();
    let devices = groups::resolve_devices(&*state.store, &leaves).await?;
    if adds && let Some(kind) = tracked.meta().map(|m| m.kind) {
        // Whoever adds: a business only with people who opted in, and never in stories.
        let members: BTreeSet<String> = devices.iter().map(|d| d.username.clone()).collect();
        let added: BTreeSet<String> = added_accounts.iter().cloned().collect();
        crate::businesses::check_members(state, kind, &members, &added).await?;
    }
    let joined: Vec<u64> = leaves
        .iter()
        .zip(&devices)
        .filter(|(leaf, _)| !keys_before.contains(&leaf.signature_key))
        .map(|(_, d)| d.device_id)
        .collect();
    let added = u32::try_from(joined.len()).unwrap_or(u32::MAX);
    let mut messages = vec![handshake];
    match (adds, welcome) {
        (true, Some(w)) => {
            mls::check_welcome(&w.0)?;
            // The Welcome is withheld from accounts that block the committer until they lift
            // the block; the committer is not told.
            let invited = Fanout::to_members(state, committer, joined.clone()).await?.recipients;
            let withheld = joined.into_iter().filter(|d| !invited.contains(d)).collect();
            messages.push(NewMessage {
                kind: EntryKind::Welcome,
                data: w.0,
                recipients: invited,
                withheld,
                ..messages[0].clone()
            });
        }
        (true, None) => return Err(invalid("a commit that adds members needs its Welcome")),
        (false, Some(_)) => return Err(invalid("a Welcome comes only with a commit that adds")),
        (false, None) => {}
    }
    let members = devices.iter().map(|d| d.device_id).collect();
    Ok(Outcome { expected, tracked, members, messages, added, added_accounts, own_update })
}
