//! The opt-in rule: a business reaches only people who opened a conversation with it, in every
//! kind of conversation. One function per rule; every path that could bring a business and a
//! person together goes through them.
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

use kith_proto::{AccountKind, ErrorCode, GroupType};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn not_opted_in(person: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotOptedIn,
        format!("a business can write to {person} only in a conversation {person} opened with it"),
    )
}

async fn is_person(state: &AppState, username: &str) -> ApiResult<bool> {
    Ok(state.store.account_info(username).await?.is_some_and(|i| i.kind == AccountKind::Person))
}

/// A business may claim a person's KeyPackages only while the person has an open 1:1
/// conversation with it.
pub async fn require_opt_in(state: &AppState, business: &str, other: &str) -> ApiResult<()> {
    if !is_person(state, other).await?
        || state.store.share_direct_conversation(other, business).await?
    {
        return Ok(());
    }
    Err(not_opted_in(other))
}

/// A business never brings a person into a conversation (a new one, or a group by commit).
pub async fn refuse_person(state: &AppState, other: &str) -> ApiResult<()> {
    if is_person(state, other).await? { Err(not_opted_in(other)) } else { Ok(()) }
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
) -> ApiResult<()> {
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
        return Err(ApiError::new(
            ErrorCode::NotOptedIn,
            "a story channel reaches people only, never a business",
        ));
    }
    for business in &businesses {
        for person in members.iter().filter(|m| !businesses.contains(*m)) {
            let new_pair = added.contains(business) || added.contains(person);
            if new_pair && !state.store.share_direct_conversation(person, business).await? {
                return Err(ApiError::new(
                    ErrorCode::NotOptedIn,
                    format!(
                        "{business} is a business: a group may hold it only with people who each \
                         opened a conversation with it, and {person} has not"
                    ),
                ));
            }
        }
    }
    Ok(())
}
