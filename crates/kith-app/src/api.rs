//! The JSON calls the page makes. Each is one SDK call on the profile's [`Client`] — or, for
//! what only reads the profile, on its [`kith_client::View`], so the page can show its chats
//! while the client waits on a server that does not answer; an error
//! comes back as `{"error": {"code", "message"}}` with the SDK's stable code, so the page
//! shows what went wrong in words and never a blank screen.

use std::sync::Arc;
use std::time::Duration;

use crate::App;
use crate::answers::{
    Business, Deleted, Device, Done, Group, GroupCreated, LinkOffered, LinkProgress, Me, Reported,
    Safety, Sent, Story, StoryPosted,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kith_client::{AccountKind, ChatSummary, ClientError, Message, Target};
use serde::Deserialize;

type Answer<T> = Result<Json<T>, Failure>;

/// An SDK error as the page sees it.
pub(crate) struct Failure(ClientError);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = match &e {
            ClientError::Server { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ClientError::Network(_) | ClientError::Protocol(_) => StatusCode::BAD_GATEWAY,
            ClientError::NoAnswer { .. } => StatusCode::GATEWAY_TIMEOUT,
            ClientError::NotRegistered => StatusCode::CONFLICT,
            ClientError::Storage(_) | ClientError::Io(_) | ClientError::Mls(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        crate::refuse(status, &e.code_str(), &e.message())
    }
}

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/me", get(me))
        .route("/api/register", post(register))
        .route("/api/chats", get(chats))
        .route("/api/chats/{chat}/messages", get(messages))
        .route("/api/chats/{chat}/read", post(read))
        .route("/api/chats/{chat}/timer", post(timer))
        .route("/api/send", post(send))
        .route("/api/messages/{id}/retry", post(retry))
        .route("/api/groups", post(create_group))
        .route("/api/groups/{id}", get(group))
        .route("/api/groups/{id}/add", post(group_add))
        .route("/api/groups/{id}/remove", post(group_remove))
        .route("/api/groups/{id}/promote", post(group_promote))
        .route("/api/groups/{id}/rename", post(group_rename))
        .route("/api/groups/{id}/leave", post(group_leave))
        .route("/api/stories", get(stories).post(post_story))
        .route("/api/contacts", get(contacts))
        .route("/api/blocked", get(blocked))
        .route("/api/block", post(block))
        .route("/api/unblock", post(unblock))
        .route("/api/report", post(report))
        .route("/api/businesses", get(businesses))
        .route("/api/delete", post(delete_chat))
        .route("/api/rotate-token", post(rotate_token))
        .route("/api/devices", get(devices))
        .route("/api/devices/{id}/name", post(rename_device))
        .route("/api/devices/{id}/remove", post(remove_device))
        .route("/api/devices/link", post(offer_link).get(link_progress))
        .route("/api/link", post(register_by_link))
        .route("/api/recover", post(recover))
        .route("/api/trust", post(trust))
        .route("/api/safety/{user}", get(safety))
        .route("/api/safety/{user}/confirm", post(confirm_safety))
        .route("/api/safety/{user}/clear", post(clear_safety))
        .route("/api/key-warnings", get(key_warnings))
}

async fn me(State(app): State<Arc<App>>) -> Answer<Me> {
    let profile = app.view().profile()?;
    Ok(Json(match profile {
        Some(p) => Me {
            registered: true,
            username: Some(p.username),
            server: Some(p.server),
            business: Some(p.kind == AccountKind::Business),
            // Given once: the page shows it, then it is gone from this app too.
            recovery_code: app
                .fresh_code
                .lock()
                .ok()
                .and_then(|mut c| c.take())
                .map(|c| c.show().expose().to_string()),
        },
        None => Me {
            registered: false,
            username: None,
            server: None,
            business: None,
            recovery_code: None,
        },
    }))
}

#[derive(Deserialize)]
struct Register {
    username: String,
    server: String,
    /// A CA certificate (PEM) to trust for the server, for a self-hosted one.
    #[serde(default)]
    ca_pem: Option<String>,
}

async fn register(State(app): State<Arc<App>>, Json(r): Json<Register>) -> Answer<Me> {
    let mut client = app.client.lock().await;
    // Refused before anything is written: a registered profile's trusted CA stays as it is.
    if let Some(p) = client.profile() {
        return Err(ClientError::AlreadyRegistered(p.username.clone()).into());
    }
    if let Some(pem) = r.ca_pem.as_deref().filter(|p| !p.trim().is_empty()) {
        client.trust_ca_pem(pem)?;
    }
    let p = client.register(r.server.trim(), r.username.trim(), AccountKind::Person).await?;
    let code = client.take_recovery_code();
    let answer = Me {
        registered: true,
        username: Some(p.username),
        server: Some(p.server),
        business: Some(false),
        recovery_code: code.map(|c| c.show().expose().to_string()),
    };
    drop(client);
    app.registered.notify_one();
    Ok(Json(answer))
}

async fn chats(State(app): State<Arc<App>>) -> Answer<Vec<ChatSummary>> {
    Ok(Json(app.view().chats()?))
}

async fn messages(State(app): State<Arc<App>>, Path(chat): Path<String>) -> Answer<Vec<Message>> {
    Ok(Json(app.view().chat_history(&chat)?))
}

async fn read(State(app): State<Arc<App>>, Path(chat): Path<String>) -> Answer<Done> {
    app.view().mark_read(&chat)?;
    Ok(Json(Done {}))
}

#[derive(Deserialize)]
struct Timer {
    /// `None` turns the timer off.
    seconds: Option<u64>,
}

async fn timer(
    State(app): State<Arc<App>>,
    Path(chat): Path<String>,
    Json(t): Json<Timer>,
) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.set_disappearing(&chat, t.seconds.map(Duration::from_secs)).await?;
    Ok(Json(Done {}))
}

#[derive(Deserialize)]
struct Send {
    chat: String,
    text: String,
}

async fn send(State(app): State<Arc<App>>, Json(s): Json<Send>) -> Answer<Sent> {
    let mut client = app.client.lock().await;
    let sent = match client.resolve_target(&s.chat)? {
        Target::Person(user) => {
            let known = client.is_contact(&user)?;
            let sent = client.send_text_reporting(&user, &s.text).await?;
            // A new contact: the story channel takes them in, and invitations they sent
            // while not yet a contact are taken, at the next upkeep — now (not after every
            // message: a sync per send would halve how fast a chat can go).
            if !known {
                app.upkeep.notify_one();
            }
            sent
        }
        Target::Group(id) => client.send_group_reporting(&id, &s.text).await?,
    };
    let chat = client.chat_of(&sent.message.conversation)?;
    Ok(Json(Sent { chat, message: sent.message, not_delivered: sent.not_delivered }))
}

/// A message of this device's that the server refused, sent again.
async fn retry(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer<Sent> {
    let mut client = app.client.lock().await;
    let message = client.retry_message(&id).await?;
    let chat = client.chat_of(&message.conversation)?;
    Ok(Json(Sent { chat, message, not_delivered: Vec::new() }))
}

#[derive(Deserialize)]
struct NewGroup {
    name: String,
    members: Vec<String>,
}

async fn create_group(
    State(app): State<Arc<App>>,
    Json(g): Json<NewGroup>,
) -> Answer<GroupCreated> {
    let mut client = app.client.lock().await;
    let members: Vec<String> =
        g.members.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
    let (id, not_added) = client.create_group_reporting(g.name.trim(), &members).await?;
    // Who could not be added, in words (the page shows them).
    let not_added: Vec<String> = not_added.iter().map(|p| client.problem_sentence(p)).collect();
    Ok(Json(GroupCreated { id, not_added }))
}

async fn group(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer<Group> {
    let view = app.view();
    let g = view.group(&id)?;
    let me = view.profile()?.map(|p| p.username).unwrap_or_default();
    Ok(Json(Group {
        me_admin: g.admins.contains(&me),
        id: g.id,
        name: g.name,
        members: g.members,
        admins: g.admins,
        left: g.left,
        removed_by: g.removed_by,
        timer_seconds: g.timer_seconds,
    }))
}

#[derive(Deserialize)]
struct User {
    user: String,
}

async fn group_add(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(u): Json<User>,
) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.group_add(&id, &[u.user.trim().to_string()]).await?;
    Ok(Json(Done {}))
}

async fn group_remove(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(u): Json<User>,
) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.group_remove(&id, u.user.trim()).await?;
    Ok(Json(Done {}))
}

async fn group_promote(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(u): Json<User>,
) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.group_promote(&id, u.user.trim()).await?;
    Ok(Json(Done {}))
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

async fn group_rename(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(r): Json<Rename>,
) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.group_rename(&id, r.name.trim()).await?;
    Ok(Json(Done {}))
}

async fn group_leave(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.group_leave(&id).await?;
    Ok(Json(Done {}))
}

async fn stories(State(app): State<Arc<App>>) -> Answer<Vec<Story>> {
    let stories = app.view().stories()?.into_iter().map(|s| Story {
        id: s.id,
        author: s.author,
        text: s.text,
        posted_at: s.posted_at,
        expires_at: s.expires_at,
    });
    Ok(Json(stories.collect()))
}

#[derive(Deserialize)]
struct Text {
    text: String,
}

async fn post_story(State(app): State<Arc<App>>, Json(t): Json<Text>) -> Answer<StoryPosted> {
    let mut client = app.client.lock().await;
    let s = client.story_post(&t.text).await?;
    Ok(Json(StoryPosted { id: s.id, expires_at: s.expires_at }))
}

async fn contacts(State(app): State<Arc<App>>) -> Answer<Vec<String>> {
    let contacts: Vec<String> = app.view().contacts()?.into_iter().map(|(name, _)| name).collect();
    Ok(Json(contacts))
}

async fn blocked(State(app): State<Arc<App>>) -> Answer<Vec<String>> {
    Ok(Json(app.view().blocked()?))
}

async fn block(State(app): State<Arc<App>>, Json(u): Json<User>) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.block(u.user.trim()).await?;
    Ok(Json(Done {}))
}

async fn unblock(State(app): State<Arc<App>>, Json(u): Json<User>) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.unblock(u.user.trim()).await?;
    Ok(Json(Done {}))
}

#[derive(Deserialize)]
struct Report {
    message_id: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn report(State(app): State<Arc<App>>, Json(r): Json<Report>) -> Answer<Reported> {
    let mut client = app.client.lock().await;
    let reason = r.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let answer = client.report(&r.message_id, reason).await?;
    Ok(Json(Reported { report_id: answer.report_id }))
}

#[derive(Deserialize)]
struct Search {
    q: String,
}

async fn businesses(State(app): State<Arc<App>>, Query(s): Query<Search>) -> Answer<Vec<Business>> {
    let mut client = app.client.lock().await;
    let found = client.search_businesses(s.q.trim()).await?.into_iter().map(|b| Business {
        username: b.username,
        display_name: b.display_name,
        description: b.description,
        verified: b.verified,
    });
    Ok(Json(found.collect()))
}

async fn delete_chat(State(app): State<Arc<App>>, Json(u): Json<User>) -> Answer<Deleted> {
    let mut client = app.client.lock().await;
    let user = u.user.trim();
    let deleted = client.delete_conversation(user.strip_prefix('@').unwrap_or(user)).await?;
    Ok(Json(Deleted { deleted: u64::try_from(deleted).unwrap_or(u64::MAX) }))
}

async fn rotate_token(State(app): State<Arc<App>>) -> Answer<Done> {
    let mut client = app.client.lock().await;
    client.rotate_token().await?;
    Ok(Json(Done {}))
}

/// This account's devices.
async fn devices(State(app): State<Arc<App>>) -> Answer<Vec<Device>> {
    let mut client = app.client.lock().await;
    Ok(Json(client.my_devices().await?.into_iter().map(Device::from).collect()))
}

#[derive(Deserialize)]
struct DeviceName {
    /// `None` (or nothing but spaces) removes the name.
    name: Option<String>,
}

/// Names one of this account's devices; the devices after.
async fn rename_device(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Json(n): Json<DeviceName>,
) -> Answer<Vec<Device>> {
    let id = device_id(&id)?;
    let mut client = app.client.lock().await;
    let name = n.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    Ok(Json(client.rename_device(id, name).await?.into_iter().map(Device::from).collect()))
}

fn device_id(id: &str) -> Result<u64, Failure> {
    id.parse().map_err(|_| {
        ClientError::refused(kith_client::Refusal::BadArgument, "a device id is a number").into()
    })
}

/// Removes another device of this account (taken out of every conversation); the devices
/// after.
async fn remove_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer<Vec<Device>> {
    let id = device_id(&id)?;
    let mut client = app.client.lock().await;
    let (left, _) = client.remove_device(id, |_, _| {}).await?;
    drop(client);
    let _ = app.events.send(crate::answers::LiveEvent::Resync.json());
    Ok(Json(left.into_iter().map(Device::from).collect()))
}

/// How often the app asks whether the new device has joined.
const LINK_POLL: Duration = Duration::from_millis(500);

/// Offers a link for a new device: the code and its QR code. A task waits for the new device
/// (taking the profile only to ask the server, then letting it go), approves it and adds it to
/// every conversation; the page follows it with [`link_progress`].
/// A QR code of `text`, as SVG.
fn qr_svg(text: &str) -> String {
    qrcode::QrCode::new(text.as_bytes())
        .map(|qr| {
            qr.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default()
}

async fn offer_link(State(app): State<Arc<App>>) -> Answer<LinkOffered> {
    let offer = app.client.lock().await.offer_link().await?;
    let code = offer.code();
    let qr_svg = qr_svg(code.expose());
    let answer =
        LinkOffered { code: code.expose().to_string(), qr_svg, expires_at: offer.expires_at };
    set_link(&app, LinkProgress { state: "waiting".into(), ..Default::default() });
    tokio::spawn(run_link(app.clone(), offer));
    Ok(Json(answer))
}

fn set_link(app: &App, progress: LinkProgress) {
    *app.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = progress;
}

fn link_failed(app: &App, e: &ClientError) {
    let error = Some(e.message());
    set_link(app, LinkProgress { state: "failed".into(), error, ..Default::default() });
}

async fn run_link(app: Arc<App>, offer: kith_client::LinkOffer) {
    let joined = loop {
        let asked = app.client.lock().await.link_joined(&offer).await;
        match asked {
            Ok(Some(joined)) => break joined,
            Ok(None) => tokio::time::sleep(LINK_POLL).await,
            Err(e) => return link_failed(&app, &e),
        }
    };
    let mut client = app.client.lock().await;
    let approved = match client.approve_joined(offer, joined).await {
        Ok(a) => a,
        Err(e) => return link_failed(&app, &e),
    };
    let device_id = Some(approved.device_id);
    set_link(&app, LinkProgress { state: "adding".into(), device_id, ..Default::default() });
    let added = client
        .add_linked_device(&approved, LINK_POLL, Duration::from_secs(60), |done, total| {
            let state = "adding".into();
            let (done, total) = (done as u64, total as u64);
            set_link(&app, LinkProgress { state, done, total, device_id, error: None });
        })
        .await;
    // The history, if the new device asked for it.
    let added = match added {
        Ok(l) if approved.history => client.send_history(&approved, |_, _| {}).await.map(|_| l),
        other => other,
    };
    drop(client);
    match added {
        Ok(l) => {
            let total = l.added_to as u64;
            let state = "linked".into();
            set_link(&app, LinkProgress { state, done: total, total, device_id, error: None });
        }
        Err(e) => link_failed(&app, &e),
    }
    let _ = app.events.send(crate::answers::LiveEvent::Resync.json());
}

/// How the last link offered is going.
async fn link_progress(State(app): State<Arc<App>>) -> Answer<LinkProgress> {
    Ok(Json(app.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()))
}

#[derive(Deserialize)]
struct TrustIn {
    user: String,
}

/// Trusts the account key the server lists for a user now (after the person checked it with
/// them): their new device joins the conversations with them.
async fn trust(State(app): State<Arc<App>>, Json(t): Json<TrustIn>) -> Answer<Done> {
    app.client.lock().await.trust_account_key(t.user.trim()).await?;
    let _ = app.events.send(crate::answers::LiveEvent::Resync.json());
    Ok(Json(Done {}))
}

fn safety_answer(n: kith_client::SafetyNumber) -> Safety {
    Safety {
        qr_svg: qr_svg(&n.qr),
        username: n.username,
        number: n.number,
        shown: n.shown,
        qr: n.qr,
        verified: n.verified,
        changed: n.changed,
    }
}

/// The safety number with a contact (their key as the key directory proves it).
async fn safety(State(app): State<Arc<App>>, Path(user): Path<String>) -> Answer<Safety> {
    let n = app.client.lock().await.safety_number(user.trim()).await?;
    Ok(Json(safety_answer(n)))
}

#[derive(Deserialize)]
struct ConfirmIn {
    /// The text of their QR code, when scanned.
    #[serde(default)]
    scanned: Option<String>,
}

/// Marks a contact verified (after comparing, or scanning their code).
async fn confirm_safety(
    State(app): State<Arc<App>>,
    Path(user): Path<String>,
    Json(c): Json<ConfirmIn>,
) -> Answer<Safety> {
    let n =
        app.client.lock().await.confirm_safety_number(user.trim(), c.scanned.as_deref()).await?;
    Ok(Json(safety_answer(n)))
}

/// Takes a verification back.
async fn clear_safety(State(app): State<Arc<App>>, Path(user): Path<String>) -> Answer<Done> {
    app.client.lock().await.clear_safety_number(user.trim())?;
    Ok(Json(Done {}))
}

/// What the key directory did not prove, or showed for this account that none of its devices
/// made: the last week's, newest first. This device's own account is checked first.
async fn key_warnings(State(app): State<Arc<App>>) -> Answer<Vec<kith_client::KeyWarning>> {
    let mut client = app.client.lock().await;
    // Out of reach, the warnings on record still show.
    if client.profile().is_some() {
        let _ = client.check_own_keys(false).await;
    }
    Ok(Json(client.recent_key_warnings()?))
}

#[derive(Deserialize)]
struct RecoverIn {
    username: String,
    server: String,
    code: String,
    #[serde(default)]
    ca_pem: Option<String>,
}

/// Takes an account back with its recovery code, as this (empty) profile's only device; the
/// answer carries the new code, to be shown once.
async fn recover(State(app): State<Arc<App>>, Json(r): Json<RecoverIn>) -> Answer<Me> {
    let mut client = app.client.lock().await;
    if let Some(p) = client.profile() {
        return Err(ClientError::AlreadyRegistered(p.username.clone()).into());
    }
    let code = kith_client::RecoveryCode::parse(&r.code)?;
    if let Some(pem) = r.ca_pem.as_deref().filter(|p| !p.trim().is_empty()) {
        client.trust_ca_pem(pem)?;
    }
    let (p, new_code) = client.recover(r.server.trim(), r.username.trim(), &code).await?;
    let answer = Me {
        registered: true,
        business: Some(p.kind == AccountKind::Business),
        username: Some(p.username),
        server: Some(p.server),
        recovery_code: Some(new_code.show().expose().to_string()),
    };
    drop(client);
    app.registered.notify_one();
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct LinkCodeIn {
    code: String,
}

/// Joins an account as a new device, with the code one of its devices shows.
async fn register_by_link(State(app): State<Arc<App>>, Json(l): Json<LinkCodeIn>) -> Answer<Me> {
    let mut client = app.client.lock().await;
    if let Some(p) = client.profile() {
        return Err(ClientError::AlreadyRegistered(p.username.clone()).into());
    }
    // The history comes as the app syncs (each sync takes in what has arrived).
    let p = client.register_by_link(l.code.trim(), LINK_POLL, true).await?;
    let answer = Me {
        registered: true,
        business: Some(p.kind == AccountKind::Business),
        username: Some(p.username),
        server: Some(p.server),
        recovery_code: None,
    };
    drop(client);
    app.registered.notify_one();
    Ok(Json(answer))
}
