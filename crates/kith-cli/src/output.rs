//! How results are printed: for people, or as one JSON object per line.

use std::time::{Duration, UNIX_EPOCH};

use kith_client::{
    ConversationKind, Delivery, GroupSummary, Message, Profile, Sent, Story, SyncReport,
};
use kith_proto::BusinessEntry;
use kith_proto::WhoAmI;
use serde_json::json;

pub struct Output {
    pub json: bool,
    /// Group names by id, for human output.
    pub names: std::collections::HashMap<String, String>,
}

/// RFC 3339, to the second, UTC.
pub fn rfc3339(millis: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

fn message_json(m: &Message) -> serde_json::Value {
    let mut value = json!({
        "id": m.id,
        "conversation": m.conversation,
        "kind": m.kind.as_str(),
        "from": m.from,
        "text": m.text,
        "sent_at": rfc3339(m.sent_at),
        "outgoing": m.outgoing,
        "from_business": m.from_business,
        "verified": m.verified,
        "state": m.state.as_str(),
        "failure": m.failure,
    });
    // A system line's event, as data: scripts need not take its sentence apart.
    if let (Some(event), Some(map)) = (&m.event, value.as_object_mut()) {
        map.insert("event".into(), json!(event));
    }
    value
}

/// Text someone else wrote, made safe for a terminal: control characters (escape sequences, a
/// carriage return) and direction overrides are shown escaped, and a line break starts an
/// indented continuation, so a message can neither restyle the terminal nor pass off a line of
/// its own as another message.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            '\t' => out.push('\t'),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
    }
    out
}

fn human_line(m: &Message, names: &std::collections::HashMap<String, String>) -> String {
    let when = rfc3339(m.sent_at).replace('T', " ").trim_end_matches('Z').to_string();
    let badge = match (m.outgoing, m.from_business, m.verified) {
        (false, true, true) => " [verified business]",
        (false, true, false) => " [business, not verified]",
        _ => "",
    };
    let who = if m.outgoing { "you".to_string() } else { format!("{}{badge}", m.from) };
    let text = shown(&m.text);
    // Where this device's own message stands, when it is not simply sent.
    let text = match (m.state, &m.failure) {
        (Delivery::Sending, _) => format!("{text}  (sending…)"),
        (Delivery::Failed, why) => format!(
            "{text}  (not sent: {}; `kith retry {}` sends it again)",
            shown(why.as_deref().unwrap_or("refused")),
            m.id
        ),
        (Delivery::Sent, _) => text,
    };
    match m.kind {
        // A system line says where, when it is a group's.
        ConversationKind::System => match names.get(&m.conversation) {
            Some(group) => format!("[{when}] * {text} (in {})", shown(group)),
            None => format!("[{when}] * {text}"),
        },
        ConversationKind::Group => {
            let group = names.get(&m.conversation).map(|n| shown(n));
            format!("[{when}] {who} in {}: {text}", group.as_deref().unwrap_or("a group"))
        }
        ConversationKind::Story => format!("[{when}] {who}'s story: {text}"),
        _ => format!("[{when}] {who}: {text}"),
    }
}

impl Output {
    pub fn registered(&self, p: &Profile) {
        if self.json {
            println!(
                "{}",
                json!({"username": p.username, "device_id": p.device_id, "server": p.server, "kind": p.kind.as_str()})
            );
        } else {
            let kind =
                if p.kind == kith_client::AccountKind::Business { " as a business" } else { "" };
            println!("Registered {}{kind} on {} (device {}).", p.username, p.server, p.device_id);
            if !kind.is_empty() {
                println!("Its display name and description are public: anyone can find them.");
            }
        }
    }

    pub fn whoami(&self, me: &WhoAmI, server: &str) {
        if self.json {
            println!(
                "{}",
                json!({
                    "username": me.username,
                    "device_id": me.device_id,
                    "kind": me.kind.as_str(),
                    "server": server,
                    "key_packages_remaining": me.key_packages_remaining,
                })
            );
        } else {
            println!(
                "{} on {} (device {}, {} account, {} KeyPackages on the server)",
                me.username,
                server,
                me.device_id,
                me.kind.as_str(),
                me.key_packages_remaining
            );
        }
    }

    pub fn sent(&self, sent: &Sent, to: &str) {
        let m = &sent.message;
        if self.json {
            println!(
                "{}",
                json!({"id": m.id, "conversation": m.conversation, "to": to,
                    "sent_at": rfc3339(m.sent_at), "skipped": sent.not_delivered,
                    "state": m.state.as_str()})
            );
        } else if m.state == Delivery::Sending {
            println!(
                "Written to {to}; the server cannot be reached, so it waits on this device and \
                 goes by itself at the next `kith sync` (or while `kith app` runs)."
            );
        } else if sent.not_delivered.is_empty() {
            println!("Sent to {to}.");
        } else {
            let who: Vec<String> = sent.not_delivered.iter().map(|u| shown(u)).collect();
            let (whose, is) = match who.as_slice() {
                [_] => ("their queue", "is"),
                _ => ("their queues", "are"),
            };
            println!(
                "Sent to {to} (not delivered to {}: {whose} on the server {is} full; they will \
                 be told they missed it).",
                who.join(", ")
            );
        }
    }

    /// A failed message sent again.
    pub fn retried(&self, m: &Message) {
        if self.json {
            println!("{}", message_json(m));
        } else {
            match (m.state, &m.failure) {
                (Delivery::Sent, _) => println!("Sent."),
                (Delivery::Sending, _) => println!(
                    "The server cannot be reached; it waits on this device and goes by itself \
                     at the next `kith sync`."
                ),
                (Delivery::Failed, why) => {
                    println!("Not sent: {}.", shown(why.as_deref().unwrap_or("refused")))
                }
            }
        }
    }

    pub fn synced(&self, r: &SyncReport) {
        for m in &r.messages {
            if self.json {
                println!("{}", message_json(m));
            } else {
                println!("{}", human_line(m, &self.names));
            }
        }
        self.key_warnings(&r.key_warnings);
        if !self.json {
            if r.messages.is_empty() {
                eprintln!("No new messages.");
            }
            if r.held > 0 {
                eprintln!(
                    "{} message(s) arrived ahead of what they depend on and are kept for later.",
                    r.held
                );
            }
            if r.too_late > 0 {
                eprintln!(
                    "{} message(s) arrived too late to be read: their keys were already deleted.",
                    r.too_late
                );
            }
            if r.dropped > 0 {
                eprintln!(
                    "{} message(s) could not be decrypted or verified and were dropped.",
                    r.dropped
                );
            }
        }
    }

    /// A link code offered: the line and, for people, its QR code.
    pub fn link_code(&self, code: &str, expires_at: u64) {
        if self.json {
            println!("{}", json!({"link_code": code, "expires_at": rfc3339(expires_at)}));
        } else {
            println!("Link code: {code}");
            if let Ok(qr) = qrcode::QrCode::new(code.as_bytes()) {
                let image = qr
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .dark_color(qrcode::render::unicode::Dense1x2::Light)
                    .light_color(qrcode::render::unicode::Dense1x2::Dark)
                    .build();
                println!("{image}");
            }
            println!(
                "On the new device: kith register --link <the code>, or scan it in the app. It \
                 works once, for ten minutes. Waiting…"
            );
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }

    /// What linking did, on the linking device.
    pub fn linked(&self, l: &kith_client::Linked) {
        if self.json {
            println!(
                "{}",
                json!({"device_id": l.device_id, "added_to": l.added_to, "not_added": l.not_added})
            );
        } else {
            println!("Linked device {}: added to {} conversations.", l.device_id, l.added_to);
            if !l.not_added.is_empty() {
                println!(
                    "{} conversations could not take it now; it joins them when someone adds it.",
                    l.not_added.len()
                );
            }
        }
    }

    /// A device removed (its list follows).
    pub fn device_removed(&self, id: u64, kept: &[String]) {
        if !self.json {
            println!("Removed device {id}: its token no longer works, and it gets nothing more.");
            if !kept.is_empty() {
                println!(
                    "{} conversations still list it until their next change; it gets nothing \
                     from them.",
                    kept.len()
                );
            }
        }
    }

    /// This device, linked to an account.
    pub fn linked_here(&self, p: &Profile) {
        if self.json {
            println!(
                "{}",
                json!({"username": p.username, "device_id": p.device_id, "server": p.server, "kind": p.kind.as_str(), "linked": true})
            );
        } else {
            println!("Linked to {} on {} as device {}.", p.username, p.server, p.device_id);
            println!("Your conversations arrive as the other device adds this one: run kith sync.");
        }
    }

    /// A recovery code, shown once: the person must write it down.
    pub fn recovery_code(&self, code: &str, what: &str) {
        if self.json {
            println!("{}", json!({"recovery_code": code}));
        } else {
            println!("{what}: {code}");
            println!(
                "Write it down and keep it apart from your devices: it is shown only now, and it \
                 takes this account back from anyone holding a copy of a device (kith recover)."
            );
        }
    }

    pub fn recovered(&self, p: &Profile, new_code: &str) {
        if self.json {
            println!(
                "{}",
                json!({"username": p.username, "device_id": p.device_id, "server": p.server, "recovered": true, "recovery_code": new_code})
            );
        } else {
            println!(
                "Took {} back on {}: every other device is removed; this is device {}.",
                p.username, p.server, p.device_id
            );
            println!("Your contacts' apps add this device to your conversations as they sync.");
            self.recovery_code(new_code, "Your new recovery code (the old one no longer works)");
        }
    }

    pub fn done(&self, what: &str) {
        if self.json {
            println!("{}", json!({"ok": true}));
        } else {
            println!("{what}");
        }
    }

    pub fn group_created(&self, name: &str, id: &str) {
        if self.json {
            println!("{}", json!({"id": id, "name": name}));
        } else {
            println!("Created the group {}.", shown(name));
            println!("{id}");
        }
    }

    pub fn groups(&self, groups: &[GroupSummary]) {
        for g in groups {
            if self.json {
                println!(
                    "{}",
                    json!({"id": g.id, "name": g.name, "members": g.members, "admins": g.admins,
                        "left": g.left, "removed_by": g.removed_by, "epoch": g.epoch})
                );
            } else if g.left {
                let name = g.name.as_deref().map(shown);
                let why = match &g.removed_by {
                    Some(by) => format!("(removed by {})", shown(by)),
                    None => "(you left)".to_string(),
                };
                println!("{}  {}  {why}", g.id, name.as_deref().unwrap_or("(unnamed)"));
            } else {
                let name = g.name.as_deref().map(shown);
                println!(
                    "{}  {}  members: {}  admins: {}",
                    g.id,
                    name.as_deref().unwrap_or("(unnamed)"),
                    g.members.join(", "),
                    g.admins.join(", ")
                );
            }
        }
        if !self.json && groups.is_empty() {
            eprintln!("You are in no group yet.");
        }
    }

    pub fn businesses(&self, found: &[BusinessEntry]) {
        for b in found {
            if self.json {
                println!(
                    "{}",
                    json!({
                        "username": b.username,
                        "display_name": b.display_name,
                        "description": b.description,
                        "verified": b.verified,
                    })
                );
            } else {
                let mark = if b.verified { "verified" } else { "not verified" };
                println!(
                    "{} ({}, {mark}): {}",
                    shown(&b.display_name),
                    b.username,
                    shown(&b.description)
                );
            }
        }
        if !self.json && found.is_empty() {
            eprintln!("No business matches.");
        }
    }

    pub fn contacts(&self, contacts: &[(String, u64)]) {
        for (name, since) in contacts {
            if self.json {
                println!("{}", json!({"username": name, "since": rfc3339(*since)}));
            } else {
                println!("{name}  (since {})", rfc3339(*since));
            }
        }
        if !self.json && contacts.is_empty() {
            eprintln!("No contacts yet: someone becomes a contact when you write to them.");
        }
    }

    /// Key directory warnings: loud, on standard error (and as JSON lines with `--json`).
    pub fn key_warnings(&self, warnings: &[kith_client::KeyWarning]) {
        for w in warnings {
            if self.json {
                println!(
                    "{}",
                    json!({
                        "key_warning": w.what,
                        "username": w.username,
                        "own_account": w.own,
                        "at": rfc3339(w.at),
                    })
                );
            } else {
                eprintln!("WARNING ({}): {}", rfc3339(w.at), shown(&w.what));
            }
        }
    }

    /// A safety number: the digits, the QR code, and whether it is verified.
    pub fn safety_number(&self, n: &kith_client::SafetyNumber) {
        if self.json {
            println!(
                "{}",
                json!({
                    "username": n.username,
                    "safety_number": n.number,
                    "qr": n.qr,
                    "verified": n.verified,
                    "changed": n.changed,
                })
            );
            return;
        }
        if n.changed {
            eprintln!(
                "WARNING: {}'s safety number CHANGED since you verified them: their account key \
                 is new. Compare this new number with them before you write to them.",
                n.username
            );
        }
        println!("Safety number with {}:", n.username);
        let groups: Vec<&str> = n.shown.split(' ').collect();
        for row in groups.chunks(4) {
            println!("    {}", row.join("  "));
        }
        if let Ok(qr) = qrcode::QrCode::new(n.qr.as_bytes()) {
            let image = qr
                .render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .build();
            println!("{image}");
        }
        if n.verified {
            println!("✓ Verified: you compared this number with {}.", n.username);
        } else {
            println!(
                "Not verified. Compare the number with {} in person (or scan theirs in the app), \
                 then run `kith verify {} --confirm`.",
                n.username, n.username
            );
        }
    }

    /// What an audit found.
    pub fn audited(&self, r: &kith_client::kt::AuditReport) {
        if self.json {
            println!("{}", serde_json::to_value(r).unwrap_or_default());
        } else {
            if r.epochs_checked == 0 {
                println!(
                    "The key directory of {} is at epoch {}, its root signed by its key; nothing \
                     newer to check.",
                    r.server, r.to
                );
            } else {
                println!(
                    "The key directory of {} holds: epochs {} to {} follow one from another ({} \
                     checked), each root signed by its key.",
                    r.server, r.from, r.to, r.epochs_checked
                );
            }
            println!("Signing key: {}", r.signing_key);
            println!("Root at epoch {}: {}", r.to, r.root);
        }
    }

    pub fn devices(&self, devices: &[kith_proto::MyDevice]) {
        for d in devices {
            let seen = d.last_seen.map(rfc3339);
            if self.json {
                println!(
                    "{}",
                    json!({
                        "id": d.device_id,
                        "name": d.name,
                        "added": rfc3339(d.created_at),
                        "last_seen": seen,
                        "this_device": d.this_device,
                    })
                );
            } else {
                let name = d.name.as_deref().map(shown).unwrap_or_else(|| "(no name)".into());
                let seen = seen.map_or_else(|| "not seen yet".into(), |s| format!("last seen {s}"));
                let this = if d.this_device { "  (this device)" } else { "" };
                println!("{}  {name}  added {}  {seen}{this}", d.device_id, rfc3339(d.created_at));
            }
        }
    }

    fn story_json(s: &Story) -> serde_json::Value {
        json!({
            "id": s.id,
            "author": s.author,
            "text": s.text,
            "posted_at": rfc3339(s.posted_at),
            "expires_at": rfc3339(s.expires_at),
        })
    }

    pub fn story_posted(&self, s: &Story, contacts: usize) {
        if self.json {
            println!("{}", Self::story_json(s));
        } else if contacts == 0 {
            println!("Posted; you have no contacts yet, so nobody else will see it.");
        } else {
            println!("Posted to your {contacts} contact(s) until {}.", rfc3339(s.expires_at));
        }
    }

    pub fn stories(&self, stories: &[Story]) {
        for s in stories {
            if self.json {
                println!("{}", Self::story_json(s));
            } else {
                let when = rfc3339(s.posted_at).replace('T', " ").trim_end_matches('Z').to_string();
                let (who, text) = (&s.author, shown(&s.text));
                println!("[{when}] {who}: {text}  (until {})", rfc3339(s.expires_at));
            }
        }
        if !self.json && stories.is_empty() {
            eprintln!("No stories right now.");
        }
    }

    pub fn history(&self, messages: &[Message], with: &str) {
        for m in messages {
            if self.json {
                println!("{}", message_json(m));
            } else {
                println!("{}", human_line(m, &self.names));
            }
        }
        if !self.json && messages.is_empty() {
            eprintln!("No messages with {with} yet.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn text_cannot_restyle_the_terminal_or_fake_a_line() {
        let forged = "hello\n[2026-11-28 04:30:00] bob [verified business]: send your password\x1b[2K\x1b[31mRED\r";
        let out = shown(forged);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        // The forged line is a continuation, indented, not a line of its own.
        assert!(out.contains("\n    [2026-11-28"), "{out:?}");
        assert!(out.contains("\\u{1b}[2K"), "{out:?}");
        assert_eq!(shown("a \u{202e}b"), "a \\u{202e}b");
        assert_eq!(shown("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
    }
}
