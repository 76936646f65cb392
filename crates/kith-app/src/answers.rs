//! What the app answers the page, as types: every answer of `api` and every event of `live` is
//! one of these (or an SDK type: `Message`, `Chat`, `Kind`, `Delivery`, `SystemEvent`). The
//! page's `web/src/types.ts` is generated from them, and a test fails when the two differ
//! (`KITH_BLESS=1 cargo test -p kith-app types_ts` writes it again).

use kith_client::Message;
use serde::Serialize;

#[cfg(test)]
use ts_rs::TS;

/// `GET /api/me`, `POST /api/register`: the profile's account, if it has one.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Me {
    pub registered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub business: Option<bool>,
    /// A recovery code this app made (at registration, recovery, or for an account from before
    /// recovery codes): given once, for the page to show once; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub recovery_code: Option<String>,
}

/// A call that only says it was done.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Done {}

/// `POST /api/send` and `POST /api/messages/{id}/retry`: the message as stored (sending, sent
/// or failed) and the chat it shows in.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Sent {
    pub chat: Option<String>,
    pub message: Message,
    /// Members whose queue on the server was full: they will be told they missed it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, ts(as = "Option<Vec<String>>", optional))]
    pub not_delivered: Vec<String>,
}

/// `POST /api/groups`.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct GroupCreated {
    pub id: String,
    /// Who could not be added, in words (also noted in the group).
    pub not_added: Vec<String>,
}

/// `GET /api/groups/{id}`.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Group {
    pub id: String,
    pub name: Option<String>,
    pub members: Vec<String>,
    pub admins: Vec<String>,
    pub left: bool,
    pub removed_by: Option<String>,
    pub timer_seconds: Option<u64>,
    pub me_admin: bool,
}

/// `GET /api/stories`: one live story.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Story {
    pub id: String,
    pub author: String,
    pub text: String,
    pub posted_at: u64,
    pub expires_at: u64,
}

/// `POST /api/stories`.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct StoryPosted {
    pub id: String,
    pub expires_at: u64,
}

/// `POST /api/report`.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Reported {
    pub report_id: u64,
}

/// `POST /api/delete`: how many conversations went.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Deleted {
    pub deleted: u64,
}

/// `GET /api/businesses`: one business account the directory found.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Business {
    pub username: String,
    pub display_name: String,
    pub description: String,
    pub verified: bool,
}

/// `GET /api/devices`: one device of this account.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Device {
    pub id: u64,
    pub name: Option<String>,
    /// When it was added, Unix milliseconds.
    pub created_at: u64,
    /// When it was last seen, to within ten minutes.
    pub last_seen: Option<u64>,
    /// The device this app runs on.
    pub this_device: bool,
}

/// `POST /api/devices/link`: a link offered — the code, its QR code (SVG) and its expiry.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct LinkOffered {
    pub code: String,
    pub qr_svg: String,
    /// Unix milliseconds.
    pub expires_at: u64,
}

/// `GET /api/safety/{user}` (and its `confirm`): the safety number with a contact, its QR code
/// (SVG), and whether this person verified it.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Safety {
    pub username: String,
    /// Sixty digits.
    pub number: String,
    /// Twelve groups of five.
    pub shown: String,
    /// What the QR code holds.
    pub qr: String,
    pub qr_svg: String,
    pub verified: bool,
    /// Verified before, and their account key changed since.
    pub changed: bool,
}

/// `GET /api/devices/link`: how the link offered last is going.
#[derive(Clone, Default, Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct LinkProgress {
    /// `none`, `waiting` (for the new device), `adding` (it to the conversations), `linked`,
    /// or `failed`.
    pub state: String,
    pub done: u64,
    pub total: u64,
    pub device_id: Option<u64>,
    pub error: Option<String>,
}

impl From<kith_proto::MyDevice> for Device {
    fn from(d: kith_proto::MyDevice) -> Self {
        Device {
            id: d.device_id,
            name: d.name,
            created_at: d.created_at,
            last_seen: d.last_seen,
            this_device: d.this_device,
        }
    }
}

/// An error, as every failed call and the live status carry it.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct AppError {
    pub code: String,
    pub message: String,
}

/// Something a sync skipped (a message it could not read, a contact it could not add).
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Problem {
    #[cfg_attr(
        test,
        ts(
            type = r#""unreadable" | "unjoinable" | "malformed" | "not_added" | "upkeep" | "unreached""#
        )
    )]
    pub kind: &'static str,
    pub chat: Option<String>,
    pub user: Option<String>,
    /// In words to show as they are, with where it happened.
    pub text: String,
}

/// A message a sync or a push brought, with the chat it shows in.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
pub(crate) struct Arrived {
    pub chat: Option<String>,
    pub message: Message,
}

/// What the app pushes over `/live`.
#[derive(Serialize)]
#[cfg_attr(test, derive(TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum LiveEvent {
    /// What a sync or a push brought.
    Update {
        messages: Vec<Arrived>,
        joined: Vec<String>,
        expired: u64,
        /// What a sync could not do, each for its own conversation.
        problems: Vec<Problem>,
    },
    /// Whether the app reaches the server, and why not.
    Status { online: bool, error: Option<AppError> },
    /// Read everything again (the page fell behind, or the outbox moved).
    Resync,
    /// A recovery code was made for this account (its first sync after recovery codes
    /// came): `GET /api/me` gives it, once.
    RecoveryCode,
    /// The history another device of this account hands this one: `done` chunks of `total`
    /// are here; `finished` once it is all taken in.
    History { done: u32, total: u32, finished: bool },
}

impl LiveEvent {
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_client::{ChatSummary, ConversationKind, Delivery, SystemEvent};

    /// Every type the page reads, declared as TypeScript.
    fn declarations() -> String {
        let cfg = ts_rs::Config::new().with_large_int("number");
        let decls = [
            ConversationKind::decl(&cfg),
            Delivery::decl(&cfg),
            SystemEvent::decl(&cfg),
            Message::decl(&cfg),
            ChatSummary::decl(&cfg),
            Me::decl(&cfg),
            Done::decl(&cfg),
            Sent::decl(&cfg),
            GroupCreated::decl(&cfg),
            Group::decl(&cfg),
            Story::decl(&cfg),
            StoryPosted::decl(&cfg),
            Reported::decl(&cfg),
            Deleted::decl(&cfg),
            Business::decl(&cfg),
            Device::decl(&cfg),
            LinkOffered::decl(&cfg),
            Safety::decl(&cfg),
            kith_client::KeyWarning::decl(&cfg),
            LinkProgress::decl(&cfg),
            AppError::decl(&cfg),
            Problem::decl(&cfg),
            Arrived::decl(&cfg),
            LiveEvent::decl(&cfg),
        ];
        let mut out = String::from(
            "// Generated from the Rust types the app serializes (crates/kith-app/src/answers.rs and\n\
             // the SDK's): do not edit. `KITH_BLESS=1 cargo test -p kith-app types_ts` writes it again.\n",
        );
        for d in decls {
            out.push_str("\nexport ");
            out.push_str(&d);
            out.push('\n');
        }
        out
    }

    #[test]
    fn types_ts_is_generated_from_the_answers() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/src/types.ts");
        let want = declarations();
        if std::env::var_os("KITH_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "web/src/types.ts is not what the app serializes; run `KITH_BLESS=1 cargo test -p \
             kith-app types_ts` and rebuild the page.\n--- generated ---\n{want}"
        );
    }
}
