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
            take_history(&app, &mut client).await;
            let connected = match client.connect_push().await {
                // Catch up with what arrived while this app was not connected.
                Ok(push) => match client.sync().await {
                    Ok(report) => {
                        keep_code(&app, &mut client);
                        history_done(&app, &client);
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
                Ok(report) => {
                    history_done(&app, &client);
                    publish(&app, &client, report)
                }
                Err(e) => break e,
            }
        };
        status(&app, false, Some(&lost));
        tokio::time::sleep(pause).await;
    }
}

/// How often the app fetches a history transfer's chunks while one is under way.
const HISTORY_EVERY: Duration = Duration::from_secs(1);

/// How often the app runs `sync`'s upkeep without being asked.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);

/// A full `sync` now and then, and when a page's action asks for one: pushes bring messages,
/// but the steps only `sync` runs — the story channel's audience, invitations held until their
/// sender became a contact, pending leaves, expiry — must run too.
pub(crate) async fn upkeep(app: Arc<App>) {
    let mut since_sync = std::time::Instant::now();
    loop {
        // While a history transfer is under way its chunks are fetched every second (nothing
        // pushes them), and the pages told how far it is.
        let transferring = app.history.lock().is_ok_and(|h| matches!(h.as_ref(), Some((_, false))));
        let wait = if transferring { HISTORY_EVERY } else { UPKEEP_EVERY };
        let asked = tokio::select! {
            () = app.upkeep.notified() => true,
            () = tokio::time::sleep(wait) => false,
        };
        let mut client = app.client.lock().await;
        if client.profile().is_none() {
            continue;
        }
        take_history(&app, &mut client).await;
        if !asked && since_sync.elapsed() < UPKEEP_EVERY {
            continue;
        }
        since_sync = std::time::Instant::now();
        // A failure here is the push loop's to report (it sees the same server).
        let waiting = client.waiting_to_send().unwrap_or(0);
        if let Ok(report) = client.sync().await {
            keep_code(&app, &mut client);
            history_done(&app, &client);
            publish(&app, &client, report);
        }
        outbox_moved(&app, &client, waiting);
    }
}

/// Takes in, chunk by chunk, what has come of a history another device of this account hands
/// this one, telling the pages how far it is (their progress bar); stops when a chunk is not
/// up yet (the next round goes on).
async fn take_history(app: &App, client: &mut Client) {
    if !client.history_under_way().unwrap_or(false) {
        return;
    }
    let mut last = None;
    loop {
        match client.continue_history_chunk().await {
            Ok(Some(progress)) if last != Some(progress) => {
                last = Some(progress);
                let (done, total) = progress;
                tell_history(app, LiveEvent::History { done, total, finished: false }, false);
            }
            // Nothing new has come yet: the next round.
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {
                let total = last.map_or(0, |(_, total)| total);
                tell_history(app, LiveEvent::History { done: total, total, finished: true }, true);
                return;
            }
        }
    }
}

/// A transfer the pages were told of that a sync finished (its settle step takes in what has
/// come): they are told it finished.
fn history_done(app: &App, client: &Client) {
    let under_way_told = app.history.lock().is_ok_and(|h| matches!(h.as_ref(), Some((_, false))));
    if under_way_told && !client.history_under_way().unwrap_or(true) {
        tell_history(app, LiveEvent::History { done: 0, total: 0, finished: true }, true);
    }
}

/// Tells the pages how a history transfer is going, and keeps it for a page that connects
/// later (the pages may not be connected yet: the app just joined the account).
fn tell_history(app: &App, event: LiveEvent, finished: bool) {
    let json = event.json();
    let began = app.history.lock().is_ok_and(|mut last| {
        let began = !finished && !matches!(last.as_ref(), Some((_, false)));
        *last = Some((json.clone(), finished));
        began
    });
    let _ = app.events.send(json);
    // The upkeep loop fetches the chunks every second from now on (nothing pushes them).
    if began {
        app.upkeep.notify_one();
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
    // How a history transfer is going; that it finished, to one page only.
    let history = app.history.lock().ok().and_then(|mut h| match h.as_ref() {
        Some((_, true)) => h.take(),
        other => other.cloned(),
    });
    if let Some((history, _)) = history
        && ws.send(WsMessage::Text(history.into())).await.is_err()
    {
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
