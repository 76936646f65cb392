//! Usernames and conversation ids.

/// Why an id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    UsernameLength,
    UsernameCharacter(char),
    ConversationId,
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdError::UsernameLength => f.write_str("a username has 3 to 32 characters"),
            IdError::UsernameCharacter(c) => {
                write!(f, "a username may hold only a-z, 0-9, '_' and '.', not {c:?}")
            }
            IdError::ConversationId => {
                f.write_str("a conversation id is 16 to 32 bytes written as lowercase hex")
            }
        }
    }
}

impl std::error::Error for IdError {}

/// Usernames are 3–32 characters of `[a-z0-9_.]`, unique per server.
pub fn validate_username(name: &str) -> Result<(), IdError> {
    let len = name.chars().count();
    if !(3..=32).contains(&len) {
        return Err(IdError::UsernameLength);
    }
    match name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.')) {
        Some(c) => Err(IdError::UsernameCharacter(c)),
        None => Ok(()),
    }
}

/// A username that keeps the rules ([`validate_username`]): checked when it is made, so a
/// request body that holds one was checked when it was read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub fn parse(name: &str) -> Result<Self, IdError> {
        validate_username(name)?;
        Ok(Username(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Username {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Username {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Username {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, Username::parse)
    }
}

/// Reads an id from its text, checked by `parse`; a refusal is noted on the thread (see
/// [`crate::watch`]) so the reader answers with the id's own error code.
fn checked<'de, D: serde::Deserializer<'de>, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<T, D::Error> {
    use serde::Deserialize as _;
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse(&text).map_err(|e| {
        crate::watch::spoiled(crate::watch::Spoiled::Id(e));
        serde::de::Error::custom(e)
    })
}

/// An id's schema in the OpenAPI document: text matching `pattern`.
#[cfg(feature = "openapi")]
fn text_schema(
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .build()
        .into()
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Username {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        text_schema("^[a-z0-9_.]{3,32}$", "3–32 of a–z, 0–9, `_` and `.`")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Username {}

/// A conversation is an MLS group; its id is the group id, 16–32 random bytes, written on the
/// wire and in paths as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(Vec<u8>);

impl ConversationId {
    pub const MIN_BYTES: usize = 16;
    pub const MAX_BYTES: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        if (Self::MIN_BYTES..=Self::MAX_BYTES).contains(&bytes.len()) {
            Ok(ConversationId(bytes.to_vec()))
        } else {
            Err(IdError::ConversationId)
        }
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        if !text.len().is_multiple_of(2)
            || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::ConversationId);
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| IdError::ConversationId))
            .collect::<Result<Vec<u8>, _>>()?;
        Self::from_bytes(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Display for ConversationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for ConversationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ConversationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, ConversationId::parse)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ConversationId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        text_schema("^([0-9a-f]{2}){16,32}$", "The MLS group id, 16–32 bytes as lowercase hex")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ConversationId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "alice", "a.b_c9", &"x".repeat(32)] {
            assert_eq!(validate_username(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_username("ab"), Err(IdError::UsernameLength));
        assert_eq!(validate_username(&"x".repeat(33)), Err(IdError::UsernameLength));
        assert_eq!(validate_username("Alice"), Err(IdError::UsernameCharacter('A')));
        assert_eq!(validate_username("al ice"), Err(IdError::UsernameCharacter(' ')));
        assert_eq!(validate_username("ålice"), Err(IdError::UsernameCharacter('å')));
    }

    #[test]
    fn conversation_ids() {
        let id = ConversationId::from_bytes(&[0xab; 16]).unwrap();
        assert_eq!(ConversationId::parse(&id.to_hex()).unwrap(), id);
        assert!(ConversationId::parse("ABAB").is_err());
        assert!(ConversationId::parse(&"ab".repeat(15)).is_err());
        assert!(ConversationId::parse(&"ab".repeat(33)).is_err());
        assert!(ConversationId::parse(&"a".repeat(33)).is_err());
        assert!(ConversationId::parse(&"zz".repeat(16)).is_err());
        assert!(ConversationId::parse("é").is_err());
    }
}
