// Generated from the Rust types the app serializes (crates/kith-app/src/answers.rs and
// the SDK's): do not edit. `KITH_BLESS=1 cargo test -p kith-app types_ts` writes it again.

export type Kind = "direct" | "group" | "story" | "system";

export type Delivery = "sending" | "sent" | "failed";

export type SystemEvent = { "kind": "created", by: string, with: Array<string>, } | { "kind": "added", by: string, who: Array<string>, } | { "kind": "removed", by: string, who: string, } | { "kind": "left", who: string, } | { "kind": "deleted_chat", who: string, } | { "kind": "named", by: string, name: string, } | { "kind": "timer", by: string, seconds: number | null, } | { "kind": "device_added", who: string, } | { "kind": "device_removed", who: string, } | { "kind": "recovered", by: string, who: string, } | { "kind": "key_unconfirmed", who: string, } | { "kind": "promoted", by: string, who: string, } | { "kind": "settings_unreadable", by: string, } | { "kind": "problem", text: string, };

export type Message = { 
/**
 * The sender's message id (random, unique): the same on every device.
 */
id: string, conversation: string, kind: Kind, from: string, text: string, 
/**
 * The sender's clock, Unix milliseconds.
 */
sent_at: number, 
/**
 * When this device stored it, Unix milliseconds.
 */
received_at: number, outgoing: boolean, 
/**
 * When this device deletes it (a story's expiry, a disappearing-message timer).
 */
expires_at: number | null, 
/**
 * Sent by a business account, and whether the server's admin verified it.
 */
from_business: boolean, verified: boolean, 
/**
 * For this device's own messages: sending, sent or failed (see `outbox`).
 */
state: Delivery, 
/**
 * Why a failed message was refused.
 */
failure?: string, 
/**
 * What a system line says happened, as data (its `text` words it).
 */
event?: SystemEvent, };

export type Chat = { 
/**
 * `@username` for a person, the group's id for a group.
 */
chat: string, kind: Kind, 
/**
 * The person's username, or the group's name (its id while it has none).
 */
title: string, last: Message | null, 
/**
 * Messages from others that arrived after the chat was last read here.
 */
unread: number, 
/**
 * The person is a business account, and the server's admin verified it.
 */
business: boolean, verified: boolean, 
/**
 * The disappearing-messages timer, in seconds, when one is set.
 */
timer_seconds: number | null, 
/**
 * This device left the group (or the 1:1 conversation ended): nothing more can be sent.
 */
left: boolean, };

export type Me = { registered: boolean, username?: string, server?: string, business?: boolean, 
/**
 * A recovery code this app made (at registration, recovery, or for an account from before
 * recovery codes): given once, for the page to show once; never stored.
 */
recovery_code?: string, };

export type Done = Record<symbol, never>;

export type Sent = { chat: string | null, message: Message, 
/**
 * Members whose queue on the server was full: they will be told they missed it.
 */
not_delivered?: Array<string>, };

export type GroupCreated = { id: string, 
/**
 * Who could not be added, in words (also noted in the group).
 */
not_added: Array<string>, };

export type Group = { id: string, name: string | null, members: Array<string>, admins: Array<string>, left: boolean, removed_by: string | null, timer_seconds: number | null, me_admin: boolean, };

export type Story = { id: string, author: string, text: string, posted_at: number, expires_at: number, };

export type StoryPosted = { id: string, expires_at: number, };

export type Reported = { report_id: number, };

export type Deleted = { deleted: number, };

export type Business = { username: string, display_name: string, description: string, verified: boolean, };

export type Device = { id: number, name: string | null, 
/**
 * When it was added, Unix milliseconds.
 */
created_at: number, 
/**
 * When it was last seen, to within ten minutes.
 */
last_seen: number | null, 
/**
 * The device this app runs on.
 */
this_device: boolean, };

export type LinkOffered = { code: string, qr_svg: string, 
/**
 * Unix milliseconds.
 */
expires_at: number, };

export type Safety = { username: string, 
/**
 * Sixty digits.
 */
number: string, 
/**
 * Twelve groups of five.
 */
shown: string, 
/**
 * What the QR code holds.
 */
qr: string, qr_svg: string, verified: boolean, 
/**
 * Verified before, and their account key changed since.
 */
changed: boolean, };

export type KeyWarning = { id: number, 
/**
 * When it was found (ms since the Unix epoch).
 */
at: number, 
/**
 * The account it is about, if one.
 */
username: string | null, 
/**
 * Whether it is about this device's own account (a key or device it did not make).
 */
own: boolean, what: string, };

export type LinkProgress = { 
/**
 * `none`, `waiting` (for the new device), `adding` (it to the conversations), `linked`,
 * or `failed`.
 */
state: string, done: number, total: number, device_id: number | null, error: string | null, };

export type AppError = { code: string, message: string, };

export type Problem = { kind: "unreadable" | "unjoinable" | "malformed" | "not_added" | "upkeep" | "unreached", chat: string | null, user: string | null, 
/**
 * In words to show as they are, with where it happened.
 */
text: string, };

export type Arrived = { chat: string | null, message: Message, };

export type LiveEvent = { "type": "update", messages: Array<Arrived>, joined: Array<string>, expired: number, 
/**
 * What a sync could not do, each for its own conversation.
 */
problems: Array<Problem>, } | { "type": "status", online: boolean, error: AppError | null, } | { "type": "resync" } | { "type": "recovery_code" } | { "type": "history", done: number, total: number, finished: boolean, };
