//! What a system line says happened, as data: [`SystemEvent`]. The SDK stores it with the line
//! (`Message::event`) and words it once for the history's `text` ([`SystemEvent::text`]); a
//! reader that words lines its own way (the app's page says "You …") reads the event, never
//! the sentence.

use serde::{Deserialize, Serialize};

/// One thing that happened in a conversation, with who did it. Every member's device records
/// the same event for the same commit or proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SystemEvent {
    /// `by` created the group with `with`.
    Created { by: String, with: Vec<String> },
    /// `by` added `who` (this device's account among them when it was invited).
    Added { by: String, who: Vec<String> },
    /// `by` removed `who`.
    Removed { by: String, who: String },
    /// `who` left the group.
    Left { who: String },
    /// `who` deleted the 1:1 chat: it is over.
    DeletedChat { who: String },
    /// `by` named the group `name`.
    Named { by: String, name: String },
    /// `by` set the disappearing-messages timer (`None`: off).
    Timer { by: String, seconds: Option<u64> },
    /// `who` added a device of theirs (linked it).
    DeviceAdded { who: String },
    /// `who` removed a device of theirs.
    DeviceRemoved { who: String },
    /// `who` took their account back with its recovery code: their devices and account key
    /// are new (the old key's recovery key signed the change), and `by` put the new device in.
    Recovered { by: String, who: String },
    /// `who`'s account key changed without their recovery key's signature (a server
    /// operator's reset, or a server lying): their new devices stay out until this person
    /// checks with them and trusts the new key.
    KeyUnconfirmed { who: String },
    /// `by` made `who` an admin.
    Promoted { by: String, who: String },
    /// `by` committed settings this device cannot read: it keeps the ones it had.
    SettingsUnreadable { by: String },
    /// Something this device could not do (a member who could not be added), in words.
    Problem { text: String },
}

impl SystemEvent {
    /// The line as the history keeps it, for the account `me`: the one acted on is "you"
    /// when it is `me`; the one acting keeps their name.
    pub fn text(&self, me: &str) -> String {
        let name = |u: &str| if u == me { "you".to_string() } else { u.to_string() };
        match self {
            SystemEvent::Created { by, with } => {
                format!("{by} created the group with {}", with.join(", "))
            }
            SystemEvent::Added { by, who } => {
                let who: Vec<String> = who.iter().map(|u| name(u)).collect();
                format!("{by} added {}", who.join(", "))
            }
            SystemEvent::Removed { by, who } => format!("{by} removed {}", name(who)),
            SystemEvent::Left { who } if who == me => "you left the group".into(),
            SystemEvent::Left { who } => format!("{who} left"),
            SystemEvent::DeletedChat { who } => format!("{who} deleted this chat"),
            SystemEvent::Named { by, name } => format!("{by} named the group \"{name}\""),
            SystemEvent::Timer { by, seconds } => crate::timers::describe(by, *seconds),
            SystemEvent::Promoted { by, who } => format!("{by} made {} an admin", name(who)),
            SystemEvent::DeviceAdded { who } if who == me => "you added a device".into(),
            SystemEvent::DeviceAdded { who } => format!("{who} added a device"),
            SystemEvent::DeviceRemoved { who } if who == me => "you removed a device".into(),
            SystemEvent::DeviceRemoved { who } => format!("{who} removed a device"),
            SystemEvent::Recovered { who, .. } if who == me => {
                "you took your account back with your recovery code".into()
            }
            SystemEvent::KeyUnconfirmed { who } => format!(
                "{who}'s account key changed, but their recovery code did not sign the change: \
                 their new device stays out until you check with them and trust it (kith trust \
                 {who})"
            ),
            SystemEvent::Recovered { who, .. } => format!(
                "{who} took their account back with their recovery code: their devices and key \
                 are new"
            ),
            SystemEvent::SettingsUnreadable { by } => format!(
                "{by} changed the group's settings in a way this device cannot read; it keeps \
                 the ones it had"
            ),
            SystemEvent::Problem { text } => text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_acted_on_is_you_and_the_actor_keeps_their_name() {
        let added = SystemEvent::Added { by: "ana".into(), who: vec!["bob".into(), "cy".into()] };
        assert_eq!(added.text("bob"), "ana added you, cy");
        assert_eq!(added.text("ana"), "ana added bob, cy");
        let removed = SystemEvent::Removed { by: "ana".into(), who: "bob".into() };
        assert_eq!(removed.text("bob"), "ana removed you");
        assert_eq!(SystemEvent::Left { who: "bob".into() }.text("bob"), "you left the group");
        assert_eq!(SystemEvent::Left { who: "bob".into() }.text("ana"), "bob left");
        let promoted = SystemEvent::Promoted { by: "ana".into(), who: "bob".into() };
        assert_eq!(promoted.text("bob"), "ana made you an admin");
    }

    #[test]
    fn events_travel_as_tagged_json() {
        let e = SystemEvent::Promoted { by: "ana".into(), who: "bob".into() };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"kind":"promoted","by":"ana","who":"bob"}"#);
        assert_eq!(serde_json::from_str::<SystemEvent>(&json).unwrap(), e);
        let off = SystemEvent::Timer { by: "ana".into(), seconds: None };
        assert_eq!(
            serde_json::to_string(&off).unwrap(),
            r#"{"kind":"timer","by":"ana","seconds":null}"#
        );
    }
}
