//! Creating conversations and sending application messages into them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kith_proto::*;
use kith_store::{NewConversation, NewMessage, StoredEntry};
use openmls_rust_crypto::OpenMlsRustCrypto;
use sha2::Digest as _;

use crate::delivery::{self, Fanout, Post};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthedDevice, Body};
use crate::groups;
use crate::groups::state::{Applied, Tracked};
use crate::mls;
use crate::safety;
use crate::state::AppState;

pub(crate) fn conversation_id(text: &str) -> ApiResult<ConversationId> {
    ConversationId::parse(text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidConversationId, e.to_string()))
}

/// After a message is durable: count it.
fn count_accepted(state: &AppState, recipients: &[u64]) {
    state.metrics.messages_accepted.inc();
    state.metrics.queue_entries_created.inc_by(recipients.len() as u64);
    state.queues.added(recipients);
}

/// After a message only the store has in full (a Welcome, a commit) is durable: count it and
/// have its connected recipients read their queue.
pub(crate) fn accepted(state: &AppState, recipients: &[u64]) {
    count_accepted(state, recipients);
    state.hub.notify(recipients);
}

fn group_full(members: usize, max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::GroupFull,
        format!("the group would have {members} members; this server allows at most {max}"),
    )
}

/// Register a new conversation (an MLS group) and deliver its Welcome to the other members.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = CreateConversation,
    responses(
        (status = 201, body = CreateConversationResponse),
        (status = 200, description = "The same Welcome this device posted before, for a conversation it created then: nothing is created or sent again (a client whose answer was lost posts again); `message_id` is 0", body = CreateConversationResponse),
        (status = 400, description = "invalid_conversation_id, invalid_message", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 409, description = "conversation_exists, group_full", body = ErrorBody),
        (status = 429, description = "rate_limited: too many new conversations (see docs/safety.md)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<CreateConversation>,
) -> ApiResult<(StatusCode, Json<CreateConversationResponse>)> {
    let started = std::time::Instant::now();
    let id = conversation_id(&req.conversation_id)?;
    mls::check_welcome(&req.welcome.0)?;
    // Posted again by a creator whose answer was lost: it was created, and is not again. Only
    // a member is looked at here (the route is cached); anyone else learns that the id is taken
    // only where they did before, after the checks and limits below.
    let digest: [u8; 32] = sha2::Sha256::digest(&req.welcome.0).into();
    let route = state.routes.route(&*state.store, id.as_bytes()).await?;
    if route.is_some_and(|r| r.members.contains(&me.device_id)) {
        // Held to the change limit: the look costs a group's load.
        delivery::check_rate(&state, &me, id.as_bytes(), Post::Change { story: false }).await?;
        return created_before(&state, &me, &id, &digest).await;
    }
    // Cheap checks before the costly one (verifying a GroupInfo and a tree of up to a
    // megabyte): the change rate is counted for every attempt, valid or not.
    delivery::check_rate(&state, &me, id.as_bytes(), Post::Change { story: false }).await?;
    let tracked = Tracked::bootstrap(
        &OpenMlsRustCrypto::default(),
        id.as_bytes(),
        &req.group_info.0,
        &req.ratchet_tree.0,
    )?;
    let meta = tracked.meta().ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidMessage, "the group lacks a valid Kith extension")
    })?;
    let leaves = tracked.leaves();
    let applied = Applied {
        device: me.device_id,
        digest,
        epoch: tracked.epoch(),
        members: u32::try_from(leaves.len()).unwrap_or(u32::MAX),
    };
    tracked.note_applied(&applied)?;
    let max = state.config.max_group_size;
    if leaves.len() > max {
        return Err(group_full(leaves.len(), max));
    }
    let members = groups::resolve_devices(&*state.store, &leaves).await?;
    if !members.iter().any(|m| m.device_id == me.device_id) {
        return Err(ApiError::new(ErrorCode::InvalidMessage, "the creator is not in the group"));
    }
    if members.len() < 2 {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "a conversation needs another member",
        ));
    }
    let accounts: std::collections::BTreeSet<&str> =
        members.iter().map(|m| m.username.as_str()).collect();
    if me.kind == AccountKind::Business {
        for other in accounts.iter().filter(|a| **a != me.username) {
            crate::businesses::refuse_person(&state, other).await?;
        }
    }
    // Whoever creates it: a business only with people who opted in, and never in stories.
    let everyone: std::collections::BTreeSet<String> =
        accounts.iter().map(|a| a.to_string()).collect();
    crate::businesses::check_members(&state, meta.kind, &everyone, &everyone).await?;
    match meta.kind {
        GroupType::Direct if accounts.len() != 2 || !meta.admins.is_empty() => {
            return Err(ApiError::new(
                ErrorCode::InvalidMessage,
                "a 1:1 conversation has exactly two accounts and no admins",
            ));
        }
        GroupType::Group | GroupType::Story if meta.admins != [me.username.clone()] => {
            return Err(ApiError::new(
                ErrorCode::InvalidMessage,
                "a new group or story channel has its creator as its only admin",
            ));
        }
        _ => {}
    }
    if meta.kind == GroupType::Story {
        let audience: Vec<String> = accounts.iter().map(|a| a.to_string()).collect();
        groups::check_story_audience(&state, &me.username, &audience).await?;
    }
    // In a story channel only its owner posts.
    let poster = (meta.kind == GroupType::Story).then(|| me.username.clone());
    let (direct, story) = (meta.kind == GroupType::Direct, meta.kind == GroupType::Story);
    let now = state.now();
    let created =
        state.store.account_info(&me.username).await?.map(|a| a.created_at).unwrap_or(now);
    // Counted toward the hourly limits from here on; given back if it is not created.
    let verdict = state.safety.check_new_conversation(&me.username, direct, story, created, now);
    if let Err(limited) = safety::enforce(&state, &me.username, verdict).await {
        // A repeat that came while the first was being created, which counted toward the limit.
        return created_before(&state, &me, &id, &digest).await.map_err(|_| limited);
    }
    let stored = async {
        let device_ids: Vec<u64> = members.iter().map(|m| m.device_id).collect();
        let others: Vec<u64> = device_ids.iter().copied().filter(|d| *d != me.device_id).collect();
        // The Welcome is withheld from members whose account blocks the creator, until the
        // block is lifted; the creator is not told.
        let fanout = Fanout::to_members(&state, &me.username, others.clone()).await?;
        let (recipients, invited) = (fanout.recipients, fanout.told);
        let withheld: Vec<u64> = others.into_iter().filter(|d| !recipients.contains(d)).collect();
        let message_id = state
            .store
            .create_conversation(NewConversation {
                conversation: id.as_bytes().to_vec(),
                creator_device: me.device_id,
                members: device_ids,
                welcome: req.welcome.0,
                epoch: tracked.epoch(),
                group_state: tracked.save()?,
                now,
                poster,
                direct,
                withheld,
            })
            .await?;
        ApiResult::Ok((message_id, recipients, invited))
    }
    .await;
    let (message_id, recipients, invited) = match stored {
        Ok(done) => done,
        Err(e) => {
            if !story {
                state.safety.release_new_conversation(&me.username, direct, now);
            }
            // A repeat that arrived while the first was being created.
            if e.code == ErrorCode::ConversationExists {
                return created_before(&state, &me, &id, &digest).await;
            }
            return Err(e);
        }
    };
    let others: Vec<String> =
        accounts.iter().filter(|a| **a != me.username).map(|a| a.to_string()).collect();
    state.safety.note_new_conversation(
        &me.username,
        id.as_bytes(),
        meta.kind,
        &others,
        invited,
        now,
    );
    accepted(&state, &recipients);
    state.metrics.create_seconds.observe(started.elapsed().as_secs_f64());
    Ok((
        StatusCode::CREATED,
        Json(CreateConversationResponse {
            conversation_id: id.to_hex(),
            message_id,
            server_time: now,
        }),
    ))
}

/// The answer to a creation this device posted before with the same Welcome, which the server
/// carried out: `200`, nothing created or sent again. Anything else for an existing id is
/// `409 conversation_exists`.
async fn created_before(
    state: &AppState,
    me: &AuthedDevice,
    id: &ConversationId,
    digest: &[u8; 32],
) -> ApiResult<(StatusCode, Json<CreateConversationResponse>)> {
    let stored = state.store.group_state(id.as_bytes()).await?;
    let tracked = stored.map(|s| Tracked::load(id.as_bytes(), &s.state)).transpose()?;
    if tracked.is_none_or(|t| t.applied_by(me.device_id, digest).is_none()) {
        return Err(kith_store::StoreError::ConversationExists.into());
    }
    let answer = CreateConversationResponse {
        conversation_id: id.to_hex(),
        message_id: 0,
        server_time: state.now(),
    };
    Ok((StatusCode::OK, Json(answer)))
}

/// Send an MLS application message to every other member device of the conversation.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, lowercase hex", pattern = "^([0-9a-f]{2}){16,32}$")),
    request_body = SendMessage,
    responses(
        (status = 202, description = "Stored durably and queued", body = SendResponse),
        (status = 400, description = "invalid_conversation_id, invalid_message", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
        (status = 409, description = "stale_epoch: the message is not for the group's current epoch; conversation_ended: the other side of this 1:1 left it", body = ErrorBody),
        (status = 429, description = "rate_limited, or queue_full: every device of the other members holds `max_queued_per_device` undelivered messages", body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    me: AuthedDevice,
    Path(id): Path<String>,
    Body(req): Body<SendMessage>,
) -> ApiResult<(StatusCode, Json<SendResponse>)> {
    let started = std::time::Instant::now();
    let id = conversation_id(&id)?;
    let route = delivery::member_route(&state, &me, id.as_bytes()).await?;
    if route.poster.as_ref().is_some_and(|p| *p != me.username) {
        return Err(ApiError::new(ErrorCode::Forbidden, "only its owner posts to a story channel"));
    }
    let framing = mls::check_application_message(&req.message.0, id.as_bytes())?;
    // A message from an epoch the group has left may be one its members can no longer
    // decrypt (they keep a few past epochs' secrets only): the sender catches up and
    // encrypts again instead.
    let route = if framing.epoch == route.epoch {
        route
    } else {
        // The cached route may be a moment old; ask the store before refusing.
        state.routes.forget_route(id.as_bytes());
        let fresh = state.routes.route(&*state.store, id.as_bytes()).await?;
        match fresh {
            Some(r) if r.epoch == framing.epoch && r.members.contains(&me.device_id) => r,
            fresh => {
                return Err(super::handshake::stale(fresh.map_or(route.epoch, |r| r.epoch)));
            }
        }
    };
    let now = state.now();
    delivery::check_rate(&state, &me, id.as_bytes(), Post::Message).await?;
    delivery::check_volume(&state, &me, req.message.0.len()).await?;
    let members: Vec<u64> = route.members.into_iter().filter(|d| *d != me.device_id).collect();
    // A 1:1 the other side left reaches nobody: say so, so the sender opens a new one, rather
    // than answer "accepted" for a message that goes nowhere. (A block does not end it: the
    // blocker stays a member.)
    if route.direct && members.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ConversationEnded,
            "the other side left this conversation; open a new one",
        ));
    }
    let mut fanout = if route.poster.is_some() {
        Fanout::to_story_audience(&state, &me.username, members.clone()).await?
    } else {
        Fanout::to_members(&state, &me.username, members.clone()).await?
    };
    fanout.leave_out_full_queues(&state, &me, &members).await?;
    // The sender is told whom it did not reach (blocking accounts too: a block stays
    // invisible); each device it skipped is told, on its return, how many it missed here
    // (below, once the message is stored).
    let mut not_delivered = Vec::new();
    for d in &fanout.full_members {
        if let Some(auth) = state.store.device_auth(*d).await?
            && !not_delivered.contains(&auth.username)
        {
            not_delivered.push(auth.username);
        }
    }
    // A story is deleted at its expiry, delivered or not.
    let expires_at = route.poster.map(|_| now + state.config.story_ttl_seconds * 1000);
    let message = NewMessage {
        conversation: id.as_bytes().to_vec(),
        sender_device: me.device_id,
        kind: EntryKind::Message,
        data: req.message.0,
        recipients: fanout.recipients,
        now,
        expires_at,
        withheld: vec![],
    };
    // The store takes its own copy; ours becomes the entry pushed to connected recipients.
    let queued = state.store.enqueue(message.clone()).await?;
    let message_id = queued.message_id;
    if !fanout.full.is_empty() {
        // Stored: a failure to count it costs the skipped devices the word, not the send.
        if let Err(e) = state.store.note_missed(&fanout.full, id.as_bytes()).await {
            tracing::warn!(error = %e, "cannot count a message as missed");
        }
    }
    // Parsed once, above: tagging its deliveries reads what the check read.
    state.franking.remember(message_id, framing.committed);
    // The message is durable already: a failure here costs a reputation signal, not the send.
    if let Err(e) = state.routes.note_spoke(&*state.store, id.as_bytes(), &me.username).await {
        tracing::warn!(error = %e, "cannot record who posted in a conversation");
    }
    if route.direct {
        state.safety.note_send(&me.username, id.as_bytes(), now);
    }
    let recipients = message.recipients;
    count_accepted(&state, &recipients);
    let entry = StoredEntry {
        seq: 0,
        message_id,
        conversation: message.conversation,
        kind: message.kind,
        sender: me.username,
        sender_device: me.device_id,
        sender_kind: me.kind,
        sender_verified: me.verified,
        data: message.data,
        created_at: now,
        expires_at,
    };
    // Its franking tag is made per recipient, as each connection delivers it.
    let entry = std::sync::Arc::new(crate::routes::queue::to_wire_untagged(entry));
    state.hub.push(&recipients, &queued.seqs, &entry);
    state.metrics.send_seconds.observe(started.elapsed().as_secs_f64());
    Ok((
        StatusCode::ACCEPTED,
        Json(SendResponse {
            message_id,
            server_time: now,
            recipients: fanout.told,
            skipped: fanout.skipped,
            not_delivered,
        }),
    ))
}
