//! Claiming KeyPackages for the people a conversation is opened with or a group grows by:
//! each checked before use, one user who cannot be added set aside (and said why) without
//! failing the rest.

use kith_proto::*;
use openmls::prelude::*;

use crate::client::Client;
use crate::error::{ClientError, ClientResult, Refusal};

/// A KeyPackage claimed for one device of a user, verified.
#[derive(Clone)]
pub(crate) struct Claimed {
    pub key_package: KeyPackage,
}

/// What [`Client::claim_each`] got: each addable user's KeyPackages, and the users who cannot
/// be added, with why.
#[derive(Default)]
pub(crate) struct Claims {
    pub claimed: Vec<(String, Vec<Claimed>)>,
    pub refused: Vec<(String, ClientError)>,
}

impl Claims {
    pub fn users(&self) -> Vec<String> {
        self.claimed.iter().map(|(u, _)| u.clone()).collect()
    }

    pub fn key_packages(&self) -> Vec<Claimed> {
        self.claimed.iter().flat_map(|(_, c)| c.iter().cloned()).collect()
    }

    /// The users set aside, as problems of `conversation`.
    pub fn problems(&self, conversation: &str) -> Vec<crate::report::Problem> {
        self.refused
            .iter()
            .map(|(user, e)| crate::report::Problem {
                kind: crate::report::ProblemKind::NotAdded,
                conversation: conversation.to_string(),
                user: Some(user.clone()),
                detail: e.to_string(),
            })
            .collect()
    }
}

/// Whether a claim's failure is the claimed user's (they cannot be added), not this device's
/// or the network's.
fn cannot_be_added(e: &ClientError) -> bool {
    matches!(
        e.refusal(),
        Some(Refusal::BadKeyPackage | Refusal::KeyNotPublished | Refusal::KeyDirectory)
    ) || matches!(e.code(), Some(ErrorCode::NoKeyPackages | ErrorCode::UnknownUser))
}

impl Client {
    /// Refuses locally a group that would exceed the server's limit.
    pub(crate) async fn check_size(&mut self, members: usize) -> ClientResult<()> {
        let max = self.api()?.whoami().await?.limits.max_group_size as usize;
        if members > max {
            return Err(ClientError::GroupFull { members, max });
        }
        Ok(())
    }

    /// Claims one KeyPackage for every device of each user and verifies each.
    pub(crate) async fn claim(&mut self, users: &[String]) -> ClientResult<Vec<Claimed>> {
        let api = self.api()?;
        let mut out = Vec::new();
        for user in users {
            // The account key and devices the key directory proves, before any KeyPackage is
            // used up.
            let (proved_key, devices) = self.published_devices(user).await?;
            let claimed = api.claim(user).await.map_err(|e| match e {
                // Say which of several names is wrong.
                ClientError::Server {
                    status, code: ErrorCode::UnknownUser, retry_after, ..
                } => ClientError::Server {
                    status,
                    code: ErrorCode::UnknownUser,
                    message: format!("there is no user named {user} on this server"),
                    retry_after,
                },
                e => e,
            })?;
            if claimed.key_packages.is_empty() {
                return Err(ClientError::refused(
                    Refusal::BadKeyPackage,
                    format!("the server handed out no KeyPackage of {user}'s"),
                ));
            }
            // The claim's account key is the one proved, or its KeyPackages are not used: a
            // first contact must not take a key from the claim that the directory never held.
            if claimed.account_key.as_ref().map(|k| k.0.as_slice()) != proved_key.as_deref() {
                return Err(ClientError::refused(
                    Refusal::KeyNotPublished,
                    format!(
                        "the server handed out {user}'s KeyPackages under an account key its \
                         key directory does not hold for them"
                    ),
                ));
            }
            out.extend(self.verify_claimed(user, claimed, &devices)?);
        }
        Ok(out)
    }

    /// `user`'s account key and devices (id, signature key) as the server lists them, once its
    /// key directory proves them (`crate::kt`); refused otherwise.
    pub(crate) async fn published_devices(
        &mut self,
        user: &str,
    ) -> ClientResult<(Option<Vec<u8>>, Vec<(u64, Vec<u8>)>)> {
        let list = self.api()?.devices(user).await?;
        let devices: Vec<(u64, Vec<u8>)> =
            list.devices.iter().map(|d| (d.device_id, d.credential_key.0.clone())).collect();
        let borrowed: Vec<(u64, &[u8])> = devices.iter().map(|(i, k)| (*i, k.as_slice())).collect();
        let key = list.account_key.as_ref().map(|k| k.0.clone());
        self.kt_check(user, key.as_deref(), &borrowed).await?;
        Ok((key, devices))
    }

    /// A KeyPackage for each of this account's other devices (none when it has no other),
    /// for a conversation this device opens.
    pub(crate) async fn claim_own_devices(&mut self) -> ClientResult<Vec<Claimed>> {
        let me = self.me()?.username.clone();
        let (_, devices) = self.published_devices(&me).await?;
        let claimed = self.api()?.claim(&me).await?;
        // Checked against the key this device holds, not the server's word for it.
        if claimed.account_key.as_ref().map(|k| k.0.clone()) != self.account_key()? {
            return Err(ClientError::refused(
                Refusal::BadKeyPackage,
                "the server lists another account key for this account than this device holds",
            ));
        }
        self.verify_claimed(&me, claimed, &devices)
    }

    /// Checks each KeyPackage a claim of `user`'s handed out.
    fn verify_claimed(
        &self,
        user: &str,
        claimed: ClaimResponse,
        published: &[(u64, Vec<u8>)],
    ) -> ClientResult<Vec<Claimed>> {
        let mut out = Vec::new();
        {
            let listed = claimed.account_key.map(B64::into_inner);
            let account_key = self.note_account_key(user, listed.as_deref(), &claimed.keys)?;
            let provider = self.provider();
            for c in claimed.key_packages {
                // The rule the server applied at upload and hand-out: a KeyPackage that breaks
                // it comes only from a server that does not keep it. Its certificate must be
                // for the device the server says it is of.
                let owner = kith_proto::keypackage::Owner {
                    account: user,
                    account_key: account_key.as_deref(),
                    device: Some(c.device_id),
                };
                let kp = kith_proto::keypackage::check(
                    provider.crypto(),
                    &c.key_package.0,
                    &owner,
                    None,
                )
                .map_err(|e| {
                    ClientError::refused(
                        Refusal::BadKeyPackage,
                        format!("{user}'s KeyPackage cannot be used: {e}"),
                    )
                })?;
                // Of a device the key directory holds for the account, with that device's key.
                let key = kp.leaf_node().signature_key().as_slice();
                if !published.iter().any(|(id, k)| *id == c.device_id && k.as_slice() == key) {
                    return Err(ClientError::refused(
                        Refusal::KeyNotPublished,
                        format!(
                            "the server handed out a KeyPackage of {user}'s for a device its key \
                             directory does not hold"
                        ),
                    ));
                }
                out.push(Claimed { key_package: kp });
            }
        }
        Ok(out)
    }

    /// Before anyone's KeyPackage is claimed for a group: every name must be an account (a
    /// typo stops here, and costs no one a claim), and a business may join only a group of
    /// people who wrote to it — this device checks its own person; the server checks everyone.
    pub(crate) async fn check_new_members(&mut self, users: &[String]) -> ClientResult<()> {
        let me = self.me()?.kind;
        let mut unknown = Vec::new();
        for user in users {
            if self.local.account_is_business(user)?.is_none() {
                self.fetch_keys(std::slice::from_ref(user)).await?;
            }
            if self.local.account_is_business(user)?.is_none() {
                // Listed, but not as the key directory proves: say that, not "no such user".
                if let Some(w) = self
                    .local
                    .key_warnings(true)?
                    .into_iter()
                    .find(|w| w.username.as_deref() == Some(user.as_str()) && !w.own)
                {
                    return Err(ClientError::refused(Refusal::KeyNotPublished, w.what));
                }
                unknown.push(user.as_str());
            }
        }
        if !unknown.is_empty() {
            let (names, advice) = match unknown.as_slice() {
                [one] => (format!("is no user named {one}"), "check the name, or leave it out"),
                more => (
                    format!("are no users named {}", more.join(", ")),
                    "check the names, or leave them out",
                ),
            };
            return Err(ClientError::Server {
                status: 404,
                code: ErrorCode::UnknownUser,
                message: format!("there {names} on this server; nobody was added ({advice})"),
                retry_after: None,
            });
        }
        for user in users {
            let business = self.local.account_is_business(user)?.unwrap_or(false);
            if business && me == AccountKind::Person && !self.local.has_open_direct(user)? {
                return Err(ClientError::refused(
                    Refusal::NotOptedIn,
                    format!(
                        "{user} is a business: it can be in a group only with people who wrote \
                         to it; write to {user} first"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Claims each user's KeyPackages on its own: a user who cannot be added (their
    /// KeyPackages cannot be used, they have none, or they are gone) is set aside with the
    /// reason; any other failure (the server unreachable, this account slowed down) stops.
    /// So one unreachable user never costs the others' claims (each ends in the conversation).
    pub(crate) async fn claim_each(&mut self, users: &[String]) -> ClientResult<Claims> {
        let mut claims = Claims::default();
        for user in users {
            match self.claim(std::slice::from_ref(user)).await {
                Ok(c) => claims.claimed.push((user.clone(), c)),
                Err(e) if cannot_be_added(&e) => claims.refused.push((user.clone(), e)),
                Err(e) => return Err(e),
            }
        }
        Ok(claims)
    }
}
