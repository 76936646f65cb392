//! Which typed field spoiled a deserialization: a body whose JSON is well formed but holds bad
//! base64, a username that breaks the rules or a malformed conversation id is refused with
//! that field's own error code, without reading serde's error text. The typed fields note
//! their failure on the thread; [`watching`] runs one (synchronous) parse and reads it.

use std::cell::Cell;

use crate::ids::IdError;

/// What a typed field refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoiled {
    /// A [`crate::B64`] that is not base64.
    Base64,
    /// A [`crate::Username`] or a [`crate::ConversationId`] that breaks its rules.
    Id(IdError),
}

thread_local! {
    static SPOILED: Cell<Option<Spoiled>> = const { Cell::new(None) };
}

/// Runs `parse` and tells which typed field, if any, failed during it (the first one).
pub fn watching<T>(parse: impl FnOnce() -> T) -> (T, Option<Spoiled>) {
    SPOILED.with(|s| s.set(None));
    let parsed = parse();
    (parsed, SPOILED.with(|s| s.take()))
}

/// Notes a typed field's failure (the first one of a parse stands).
pub(crate) fn spoiled(what: Spoiled) {
    SPOILED.with(|s| {
        if s.get().is_none() {
            s.set(Some(what));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{B64, ConversationId, Username};

    #[test]
    fn the_field_that_failed_is_seen() {
        let (parsed, bad) = watching(|| serde_json::from_str::<B64>("\"not base64!\""));
        assert!(parsed.is_err() && bad == Some(Spoiled::Base64));
        let (parsed, bad) = watching(|| serde_json::from_str::<B64>("7"));
        assert!(parsed.is_err() && bad.is_none(), "a wrong type is not bad base64");
        let (parsed, bad) = watching(|| serde_json::from_str::<B64>("\"AA==\""));
        assert!(parsed.is_ok() && bad.is_none());
        let (parsed, bad) = watching(|| serde_json::from_str::<Username>("\"Ana\""));
        assert!(parsed.is_err());
        assert_eq!(bad, Some(Spoiled::Id(IdError::UsernameCharacter('A'))));
        let (parsed, bad) = watching(|| serde_json::from_str::<ConversationId>("\"abc\""));
        assert!(parsed.is_err() && bad == Some(Spoiled::Id(IdError::ConversationId)));
        let (parsed, bad) = watching(|| serde_json::from_str::<Username>("\"ana\""));
        assert_eq!(parsed.unwrap().as_str(), "ana");
        assert!(bad.is_none());
    }
}
