//! Businesses: the public directory ([`search`]) and the opt-in rule — a business reaches only
//! people who opened a conversation with it, in every kind of conversation. One function per
//! rule; every path that could bring a business and a person together goes through them.
//!
//! - [`require_opt_in`]: a business claims a person's KeyPackages only while the person has an
//!   open 1:1 conversation with it;
//! - [`refuse_person`]: a business never brings a person into a conversation itself (a new one,
//!   or a group by commit);
//! - [`check_members`]: a group holding a business has only person members who each have an
//!   open 1:1 conversation with it (which only the person can have opened), whoever created the
//!   group or added them; a story channel never holds a business. Checked at creation and at
//!   every commit that adds, for the pairs the change brings together.

use std::collections::BTreeSet;

use kith_proto::{AccountKind, BusinessEntry, GroupType};
use kith_store::StoreError;

use crate::state::AppState;

/// Why the opt-in rule refused (`not_opted_in`).
#[derive(Debug, thiserror::Error)]
pub enum BusinessError {
    #[error("a business can write to {0} only in a conversation {0} opened with it")]
    NotOptedIn(String),
    #[error("a story channel reaches people only, never a business")]
    InStory,
    #[error(
        "{business} is a business: a group may hold it only with people who each opened a \
         conversation with it, and {person} has not"
    )]
    GroupWithout { business: String, person: String },
    /// `bad_request`.
    #[error("a search has 1 to 64 characters")]
    BadSearch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, BusinessError>;

async fn is_person(state: &AppState, username: &str) -> Result<bool> {
    Ok(state.store.account_info(username).await?.is_some_and(|i| i.kind == AccountKind::Person))
}

/// A business may claim a person's KeyPackages only while the person has an open 1:1
/// conversation with it.
pub async fn require_opt_in(state: &AppState, business: &str, other: &str) -> Result<()> {
    if !is_person(state, other).await?
        || state.store.share_direct_conversation(other, business).await?
    {
        return Ok(());
    }
    Err(BusinessError::NotOptedIn(other.to_string()))
}

/// A business never brings a person into a conversation (a new one, or a group by commit).
pub async fn refuse_person(state: &AppState, other: &str) -> Result<()> {
    if is_person(state, other).await? {
        Err(BusinessError::NotOptedIn(other.to_string()))
    } else {
        Ok(())
    }
}

/// After a change, the group of `kind` holds `members`, of whom `added` are new (all of them
/// at creation): every business among them and every person among them who were brought
/// together by this change must share a 1:1 conversation, and a story channel holds no
/// business at all. A 1:1 conversation is the opt-in itself (only a person can open one
/// with a business: [`refuse_person`]).
pub async fn check_members(
    state: &AppState,
    kind: GroupType,
    members: &BTreeSet<String>,
    added: &BTreeSet<String>,
) -> Result<()> {
    if kind == GroupType::Direct || added.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = members.iter().cloned().collect();
    let businesses: BTreeSet<String> =
        state.store.businesses_among(&all).await?.into_iter().collect();
    if businesses.is_empty() {
        return Ok(());
    }
    if kind == GroupType::Story {
        return Err(BusinessError::InStory);
    }
    for business in &businesses {
        for person in members.iter().filter(|m| !businesses.contains(*m)) {
            let new_pair = added.contains(business) || added.contains(person);
            if new_pair && !state.store.share_direct_conversation(person, business).await? {
                let (business, person) = (business.clone(), person.clone());
                return Err(BusinessError::GroupWithout { business, person });
            }
        }
    }
    Ok(())
}

/// The directory: businesses whose username, display name or description holds `q` (1–64
/// characters), verified ones first, 50 at most.
pub async fn search(state: &AppState, q: &str) -> Result<Vec<BusinessEntry>> {
    let q = q.trim();
    if q.is_empty() || q.chars().count() > 64 {
        return Err(BusinessError::BadSearch);
    }
    let found = state.store.search_businesses(q, 50).await?;
    Ok(found
        .into_iter()
        .map(|b| BusinessEntry {
            display_name: b.display_name.unwrap_or_else(|| b.username.clone()),
            description: b.description.unwrap_or_default(),
            username: b.username,
            verified: b.verified,
        })
        .collect())
}
