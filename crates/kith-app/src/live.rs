//! Live updates. One loop keeps the push connection to `kithd` (reconnecting with a growing
//! pause, and catching up with a sync each time it connects), processes what arrives with the
//! profile's client and tells every open page over its WebSocket (`/live`): the new messages
//! with the chat each belongs to, and whether the app is connected. No polling, no reload.
//! Each connection first sends what waited in the outbox (written while the server could not
//! be reached), and the pages are told to read their chats again when any of it went.

use std::sync::Arc;
use std::time::Duration;

use crate::answers::{AppError, Arrived, LiveEvent, Problem};
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use kith_client::{Client, ClientError, SyncReport};

use crate::App;

/// The longest pause between attempts to reach the server.
const MAX_PAUSE: Duration = Duration::from_secs(30);

pub(crate) async fn run(app: Arc<App>) {
    let mut pause = Duration::from_secs(1);
    loop {
        let connected = {
            let mut client = app.client.lock().await;
            if client.profile().is_none() {
                drop(client);
                app.registered.notified().await;
                continue;
            }
            // Connecting sends what waited in the outbox (`kith_client`'s settle step).
            let waiting = client.waiting_to_send().unwrap_or(0);
            let connected = match client.connect_push().await {
                // Catch up with what arrived while this app was not connected.
                Ok(push) => match client.sync().await {
                    Ok(report) => {
                        keep_code(&app, &mut client);
                        publish(&app, &client, report);
                        Ok(push)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            outbox_moved(&app, &client, waiting);
            connected
        };
        let mut push = match connected {
            Ok(push) => push,
            Err(e) => {
                status(&app, false, Some(&e));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        status(&app, true, None);
        pause = Duration::from_secs(1);
        let lost = loop {
            // Wait without holding the client: the page's calls go on meanwhile.
            let entries = match push.next_entries().await {
                Ok(entries) => entries,
                Err(e) => break e,
            };
            let mut client = app.client.lock().await;
            match client.take_pushed(&mut push, &entries).await {
                Ok(report) => publish(&app, &client, report),
                Err(e) => break e,
            }
        };
        status(&app, false, Some(&lost));
        tokio::time::sleep(pause).await;
    }
}

/// How often the app runs `sync`'s upkeep without being asked.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);

/// A full `sync` now and then, and when a page's action asks for one: pushes bring messages,
/// but the steps only `sync` runs — the story channel's audience, invitations held until their
/// sender became a contact, pending leaves, expiry — must run too.
pub(crate) async fn upkeep(app: Arc<App>) {
    loop {
        tokio::select! {
            () = app.upkeep.notified() => {}
            () = tokio::time::sleep(UPKEEP_EVERY) => {}
        }
        let mut client = app.client.lock().await;
        if client.profile().is_none() {
            continue;
        }
        // A failure here is the push loop's to report (it sees the same server).
        let waiting = client.waiting_to_send().unwrap_or(0);
        if let Ok(report) = client.sync().await {
            keep_code(&app, &mut client);
            publish(&app, &client, report);
        }
        outbox_moved(&app, &client, waiting);
    }
}

/// Keeps a recovery code the sync made for the page to show, and tells the pages.
fn keep_code(app: &App, client: &mut Client) {
    if let Some(code) = client.take_recovery_code() {
        if let Ok(mut fresh) = app.fresh_code.lock() {
            *fresh = Some(code);
        }
        let _ = app.events.send(LiveEvent::RecoveryCode.json());
    }
}

/// Tells the pages what a sync or a push brought.
fn publish(app: &App, client: &Client, report: SyncReport) {
    if report.messages.is_empty()
        && report.joined.is_empty()
        && report.expired == 0
        && report.problems.is_empty()
    {
        return;
    }
    // What could not be done, each for its conversation, in words (the page shows them).
    let problems: Vec<_> = report
        .problems
        .iter()
        .map(|p| Problem {
            kind: p.kind.as_str(),
            chat: client.chat_of(&p.conversation).ok().flatten(),
            user: p.user.clone(),
            text: client.problem_sentence(p),
        })
        .collect();
    let messages: Vec<_> = report
        .messages
        .iter()
        .map(|m| Arrived {
            chat: client.chat_of(&m.conversation).ok().flatten(),
            message: m.clone(),
        })
        .collect();
    let event = LiveEvent::Update {
        messages,
        joined: report.joined,
        expired: u64::try_from(report.expired).unwrap_or(u64::MAX),
        problems,
    };
    let _ = app.events.send(event.json());
}

/// Messages that waited to be sent went (or were refused): the pages read their chats again, to
/// show each one's tick or "not sent".
fn outbox_moved(app: &App, client: &Client, waiting_before: u64) {
    if waiting_before > 0 && client.waiting_to_send().unwrap_or(0) != waiting_before {
        let _ = app.events.send(LiveEvent::Resync.json());
    }
}

fn status(app: &App, online: bool, error: Option<&ClientError>) {
    let error = error.map(|e| AppError { code: e.code_str(), message: e.message() });
    let event = LiveEvent::Status { online, error }.json();
    if let Ok(mut last) = app.status.lock() {
        last.clone_from(&event);
    }
    let _ = app.events.send(event);
}

/// `GET /live`: the page's WebSocket (the gate checked its session and origin).
pub(crate) async fn socket(
    State(app): State<Arc<App>>,
    connection: Option<axum::Extension<kith_listen::ConnectionPermit>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The socket stays counted against the listener's caps while it lives.
    let permit = connection.map(|c| c.0);
    upgrade.on_upgrade(move |ws| async move {
        forward(app, ws).await;
        drop(permit);
    })
}

async fn forward(app: Arc<App>, mut ws: WebSocket) {
    let mut events = app.events.subscribe();
    let status = app.status.lock().map(|s| s.clone()).unwrap_or_default();
    if ws.send(WsMessage::Text(status.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => {
                    if ws.send(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                // A page that fell behind reloads its view instead of missing updates.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let resync = LiveEvent::Resync.json();
                    if ws.send(WsMessage::Text(resync.into())).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            incoming = ws.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
