//! Linking a device to this account, and joining an account from a new device (see
//! docs/protocol.md, "Linking a device"; [`code`] has the code and the channel it keys).
//!
//! On the device that has the account ("the linking device"):
//! 1. [`Client::offer_link`]: a link id and a password, shown as the code; the server learns
//!    the id only.
//! 2. [`Client::approve_link`]: waits for the new device, opens its request (its credential
//!    key and the hash of its token — only a device that had the code could seal it), signs
//!    the approval with the account key and seals the handover for it: the account key, the
//!    contacts and blocks.
//! 3. [`Client::add_linked_device`]: waits for the new device's KeyPackages (sealed, certified
//!    by the account key for its id) and adds it to every conversation, one commit each.
//!
//! On the new device, [`Client::register_by_link`] does the other half, and hands its
//! KeyPackages over before it returns.

pub mod code;
pub mod history;

use std::time::Duration;

use kith_proto::*;
use openmls_basic_credential::SignatureKeyPair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use code::LinkCode;
use code::{Channel, Exchange, What};

use crate::client::{Client, now_millis, random_hex};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::Profile;
use crate::mls;

/// KeyPackages the new device hands over beyond one per conversation (conversations made
/// while it is being linked).
const SPARE_KEY_PACKAGES: usize = 4;

/// The most KeyPackages a new device makes for the linking one.
const MAX_HANDED_KEY_PACKAGES: usize = 5_000;

/// Times adding the new device to one conversation waits out the server's change rate.
const RATE_WAITS: u32 = 3;

/// What the new device asks, sealed for the linking one.
#[derive(Serialize, Deserialize)]
struct JoinRequest {
    credential_key: B64,
    token_hash: B64,
    /// Whether it wants the history.
    #[serde(default)]
    history: bool,
}

/// What the linking device hands over, sealed for the new one.
#[derive(Serialize, Deserialize)]
struct Handover {
    username: String,
    kind: AccountKind,
    /// The account key's secret.
    account_key: B64,
    contacts: Vec<(String, u64)>,
    blocked: Vec<String>,
    /// How many conversations the linking device will add the new one to.
    conversations: usize,
}

/// The new device's KeyPackages, sealed for the linking one.
#[derive(Serialize, Deserialize)]
struct Answer {
    key_packages: Vec<B64>,
}

/// A link this device offered, until the new device joins it.
#[derive(Debug)]
pub struct LinkOffer {
    code: LinkCode,
    exchange: Exchange,
    /// Unix milliseconds.
    pub expires_at: u64,
}

impl LinkOffer {
    /// The code to show (and put in the QR code).
    pub fn code(&self) -> Secret {
        self.code.show()
    }
}

/// What the new device sent when it joined a link, before it is opened.
pub struct Joined {
    pake: B64,
    request: B64,
}

/// A device approved through a link, and the channel to it.
pub struct Approved {
    pub device_id: u64,
    /// The new device asked for the history ([`Client::send_history`]).
    pub history: bool,
    link: String,
    credential_key: Vec<u8>,
    channel: Channel,
}

impl std::fmt::Debug for Approved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approved").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

/// What linking did: the new device, and how many conversations it was added to (and which
/// could not take it now).
#[derive(Clone, Debug, Serialize)]
pub struct Linked {
    pub device_id: u64,
    pub added_to: usize,
    pub not_added: Vec<String>,
}

fn link_refused(why: impl Into<String>) -> ClientError {
    ClientError::refused(Refusal::BadLinkCode, why)
}

fn expired() -> ClientError {
    link_refused("the link expired before the other device finished: offer a new one")
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2_10::Digest as _;
    sha2_10::Sha256::digest(bytes).to_vec()
}

impl Client {
    /// Offers a link for a new device of this account: the code to show, good for ten
    /// minutes and one use.
    pub async fn offer_link(&mut self) -> ClientResult<LinkOffer> {
        let me = self.me()?.clone();
        if self.stored_account_key()?.is_none() {
            return Err(ClientError::refused(
                Refusal::BadArgument,
                "this device holds no account key yet: run `kith sync` once, then link",
            ));
        }
        let code = LinkCode::new(&code::random_id()?, &me.server)?;
        let (exchange, pake) = code.start();
        let req = OfferLink { link_id: code.id.clone(), pake: B64(pake) };
        let offered = self.api()?.offer_link(&req).await?;
        Ok(LinkOffer { code, exchange, expires_at: offered.expires_at })
    }

    /// Waits (asking every `every`) for the new device to join `offer`, then approves it
    /// ([`Client::approve_joined`]).
    pub async fn approve_link(
        &mut self,
        offer: LinkOffer,
        every: Duration,
    ) -> ClientResult<Approved> {
        loop {
            if let Some(joined) = self.link_joined(&offer).await? {
                return self.approve_joined(offer, joined).await;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Whether the new device joined `offer` yet (one question to the server; an app asks
    /// again later without holding the profile meanwhile). Past the expiry: refused.
    pub async fn link_joined(&mut self, offer: &LinkOffer) -> ClientResult<Option<Joined>> {
        let r = self.api()?.link_request(&offer.code.id).await?;
        if let (Some(pake), Some(request)) = (r.pake, r.request) {
            return Ok(Some(Joined { pake, request }));
        }
        if now_millis() >= offer.expires_at {
            return Err(expired());
        }
        Ok(None)
    }

    /// Approves the device that joined: the account key signs its credential key and token
    /// hash, and the handover goes to it sealed. A device that did not have the code is
    /// refused and the link cancelled.
    pub async fn approve_joined(
        &mut self,
        offer: LinkOffer,
        joined: Joined,
    ) -> ClientResult<Approved> {
        let api = self.api()?;
        let id = offer.code.id.clone();
        let Joined { pake, request: sealed } = joined;
        let opened = offer.exchange.finish(&pake.0).ok().and_then(|channel| {
            let request = channel.open(What::Request, &sealed.0)?;
            let request: JoinRequest = serde_json::from_slice(&request).ok()?;
            Some((channel, request))
        });
        let Some((channel, request)) = opened else {
            // Someone without the code (a mistyped one, or a guess): nothing is linked.
            if let Err(e) = api.cancel_link(&id).await {
                tracing::debug!(error = %e, "a link that failed could not be cancelled");
            }
            return Err(link_refused(
                "the other device did not have this code (mistyped, or someone else tried it): \
                 nothing was linked; offer a new link",
            ));
        };
        let key = self
            .stored_account_key()?
            .ok_or_else(|| ClientError::Protocol("the account key is gone".into()))?;
        let me = self.me()?.clone();
        let approval = account::approval_bytes(
            &id,
            &me.username,
            &request.credential_key.0,
            &request.token_hash.0,
        );
        let handover = Handover {
            username: me.username.clone(),
            kind: me.kind,
            account_key: B64(key.to_bytes().to_vec()),
            contacts: self.local.contacts()?,
            blocked: self.local.blocked()?,
            conversations: self.local.active_conversation_ids()?.len(),
        };
        let plain = Zeroizing::new(
            serde_json::to_vec(&handover).map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        drop(handover);
        let req = ApproveLink {
            credential_key: request.credential_key.clone(),
            token_hash: request.token_hash,
            signature: B64(account::sign_approval(&key, &approval)),
            handover: B64(channel.seal(What::Handover, &plain)?),
        };
        let approved = api.approve_link(&id, &req).await?;
        Ok(Approved {
            device_id: approved.device_id,
            history: request.history,
            link: id,
            credential_key: request.credential_key.0,
            channel,
        })
    }

    /// Waits (asking every `every`, until `wait` is over) for the approved device's
    /// KeyPackages, then adds it to every conversation this device is in, one commit each;
    /// `progress(done, total)` after each. A conversation that cannot take it now is named in
    /// [`Linked::not_added`] and the rest go on.
    pub async fn add_linked_device(
        &mut self,
        approved: &Approved,
        every: Duration,
        wait: Duration,
        mut progress: impl FnMut(usize, usize),
    ) -> ClientResult<Linked> {
        let api = self.api()?;
        let until = std::time::Instant::now() + wait;
        let sealed = loop {
            if let Some(k) = api.link_request(&approved.link).await?.key_packages {
                break k;
            }
            if std::time::Instant::now() >= until {
                return Err(ClientError::Protocol(
                    "the new device did not answer with its KeyPackages; it is linked, and joins \
                     each conversation when someone adds it"
                        .into(),
                ));
            }
            tokio::time::sleep(every).await;
        };
        // Done with, unless the history goes through it still (the new device drops it).
        if !approved.history
            && let Err(e) = api.cancel_link(&approved.link).await
        {
            tracing::debug!(error = %e, "a used link could not be dropped (it expires anyway)");
        }
        let answer: Answer = approved
            .channel
            .open(What::KeyPackages, &sealed.0)
            .and_then(|a| serde_json::from_slice(&a).ok())
            .ok_or_else(|| link_refused("the new device's KeyPackages do not open"))?;
        let me = self.me()?.clone();
        let account_key = self.account_key()?;
        let mut key_packages = Vec::new();
        {
            let provider = self.provider();
            let owner = kith_proto::keypackage::Owner {
                account: &me.username,
                account_key: account_key.as_deref(),
                device: Some(approved.device_id),
            };
            for kp in &answer.key_packages {
                use openmls_traits::OpenMlsProvider as _;
                let kp = kith_proto::keypackage::check(provider.crypto(), &kp.0, &owner, None)
                    .map_err(|e| link_refused(format!("the new device's KeyPackage: {e}")))?;
                if kp.leaf_node().signature_key().as_slice() != approved.credential_key {
                    return Err(link_refused("a KeyPackage of another key than the new device's"));
                }
                key_packages.push(kp);
            }
        }
        let conversations = self.local.active_conversation_ids()?;
        let total = conversations.len();
        let mut linked = Linked { device_id: approved.device_id, added_to: 0, not_added: vec![] };
        progress(0, total);
        for (done, id) in conversations.iter().enumerate() {
            let Some(kp) = key_packages.pop() else {
                linked.not_added.push(id.clone());
                continue;
            };
            // An account with many conversations meets the server's change rate: it waits as
            // told, a few times, rather than leave the new device out.
            let mut waits = 0;
            let added = loop {
                let added = self
                    .commit_change(id, |_, _| {
                        let adds = vec![kp.clone()];
                        Ok(Some(crate::groups::Plan { adds, ..Default::default() }))
                    })
                    .await;
                match &added {
                    Err(ClientError::Server {
                        code: ErrorCode::RateLimited,
                        retry_after: Some(s),
                        ..
                    }) if waits < RATE_WAITS && *s <= 120 => {
                        waits += 1;
                        tokio::time::sleep(Duration::from_secs(*s)).await;
                    }
                    _ => break added,
                }
            };
            match added {
                Ok(()) => linked.added_to += 1,
                Err(e) if e.is_local() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "a conversation could not take the new device");
                    linked.not_added.push(id.clone());
                }
            }
            progress(done + 1, total);
        }
        Ok(linked)
    }

    /// Joins an account from this (new, empty) profile with a code another device of it
    /// offered: registers this device with its approval, takes the handover (the account key,
    /// contacts, blocks) and hands its KeyPackages to the other device, which adds it to every
    /// conversation. Waits (asking every `every`) for the approval.
    pub async fn register_by_link(
        &mut self,
        code: &str,
        every: Duration,
        history: bool,
    ) -> ClientResult<Profile> {
        if let Some(p) = &self.profile {
            return Err(ClientError::AlreadyRegistered(p.username.clone()));
        }
        let code = LinkCode::parse(code)?;
        let ca = self.pending_ca.clone();
        let api =
            crate::api::Api::new(self.http(ca.as_deref())?, &code.server, None, ca.as_deref())?;
        let offer = api.look_link(&code.id).await?;
        let (exchange, pake) = code.start();
        let channel = exchange.finish(&offer.pake.0)?;
        let token = Secret::new(random_hex(32)?);
        let signer = {
            let provider = self.provider();
            let signer = SignatureKeyPair::new(openmls::prelude::SignatureScheme::ED25519)
                .map_err(ClientError::mls)?;
            signer
                .store(openmls_traits::OpenMlsProvider::storage(&provider))
                .map_err(ClientError::mls)?;
            signer
        };
        let request = JoinRequest {
            credential_key: B64(signer.to_public_vec()),
            token_hash: B64(sha256(token.expose().as_bytes())),
            history,
        };
        let sealed = channel.seal(
            What::Request,
            &serde_json::to_vec(&request).map_err(|e| ClientError::Protocol(e.to_string()))?,
        )?;
        api.join_link(&code.id, &JoinLink { pake: B64(pake), request: B64(sealed) }).await?;
        let (device_id, sealed) = loop {
            match api.link_result(&code.id).await {
                Ok(LinkResult { approved: true, device_id: Some(d), handover: Some(h) }) => {
                    break (d, h);
                }
                Ok(_) => {}
                // Cancelled by the other device: it could not open what this one sent.
                Err(e) if e.code() == Some(ErrorCode::UnknownLink) => {
                    return Err(link_refused(
                        "the other device did not take this code: it was mistyped; ask for a \
                         new one",
                    ));
                }
                Err(e) => return Err(e),
            }
            if now_millis() >= offer.expires_at {
                return Err(expired());
            }
            tokio::time::sleep(every).await;
        };
        let handover: Handover = channel
            .open(What::Handover, &sealed.0)
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| {
                link_refused("the other device's answer does not open with this code")
            })?;
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(handover.account_key.0.as_slice().try_into().map_err(|_| {
                ClientError::Protocol("the handed-over account key is not 32 bytes".into())
            })?);
        validate_username(&handover.username)
            .map_err(|e| ClientError::Protocol(format!("the handed-over username: {e}")))?;
        let profile = Profile {
            server: api.base().to_string(),
            username: handover.username.clone(),
            kind: handover.kind,
            device_id,
            token,
            signature_key: signer.to_public_vec(),
            ca_cert: ca,
        };
        self.local.save_profile(&profile)?;
        self.local.set_account_key(&seed)?;
        let account_key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let cert = self.certify_device(&account_key, &profile)?;
        self.mark_certified()?;
        for (user, since) in &handover.contacts {
            self.local.add_contact(user, *since)?;
        }
        for user in &handover.blocked {
            self.local.set_blocked(user, true, now_millis())?;
        }
        self.profile = Some(profile.clone());
        // KeyPackages for the other device to add this one with, certified for this id.
        let key_packages = {
            let provider = self.provider();
            // Bounded: the other side's count is its word.
            let n = handover.conversations.min(MAX_HANDED_KEY_PACKAGES) + SPARE_KEY_PACKAGES;
            mls::key_packages(&provider, &signer, &profile.username, Some(&cert), n, false)?
        };
        let answer = Answer { key_packages: key_packages.into_iter().map(B64).collect() };
        let plain =
            serde_json::to_vec(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let req = AnswerLink { key_packages: B64(channel.seal(What::KeyPackages, &plain)?) };
        self.api()?.answer_link(&code.id, &req).await?;
        // The history comes through the link next; kept so that a cut transfer resumes.
        if history {
            self.local.begin_transfer(&code.id, channel.to_new_key())?;
        }
        // And its own, on the server, for anyone to reach it by.
        match self.replenish_key_packages().await {
            Err(e) if e.is_local() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "this device's KeyPackages wait for the next sync")
            }
            Ok(_) => {}
        }
        Ok(profile)
    }
}
