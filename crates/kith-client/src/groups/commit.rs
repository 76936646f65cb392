//! One commit of this device's: built from a [`Plan`] against the group as it is, posted,
//! settled (merged, or dropped when another member's commit won the epoch, then tried again
//! after catching up); and leaving, which completes requests to leave that wait.

use std::collections::BTreeSet;

use kith_proto::*;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;

use super::{pending_removals, staying_members};
use crate::client::{Client, now_millis};
use crate::error::{ClientError, ClientResult, Refusal};
use crate::events::SystemEvent;
use crate::local::{ConversationKind, Unsure};
use crate::mls::{self, Provider};
use crate::settings::{self as epoch_settings, Committed};
use crate::unsure::{Answer, classify, request_json};
use kith_proto::group::kept_admins;
use kith_proto::settings::Settings;

/// Attempts at one change before giving up on a group that keeps moving.
const MAX_COMMIT_ATTEMPTS: usize = 10;

/// What a commit of this device's changes. The rest follows from the group as it is when the
/// commit is built: requests to leave that wait are completed, the admins are kept members
/// (the heir named if none is left; see [`kept_admins`]), and the settings travel with it when
/// they change or the conversation has none in its epoch yet.
#[derive(Default)]
pub(crate) struct Plan {
    pub adds: Vec<KeyPackage>,
    pub removes: Vec<LeafNodeIndex>,
    /// The admins this device, an admin, chooses.
    pub admins: Option<Vec<String>>,
    /// New settings.
    pub settings: Option<Settings>,
    /// Rotate this device's keys even if nothing else requires it.
    pub self_update: bool,
}

/// A commit ready to send: its Welcome if it adds anyone, and the settings record it commits
/// to when they change.
struct Built {
    commit: MlsMessageOut,
    welcome: Option<MlsMessageOut>,
    record: Option<Vec<u8>>,
}

/// Whether adding one member can be why a change failed: OpenMLS refusing to build it (a key
/// that clashes with another member's), or the server refusing its tree or its audience (a
/// contact who is no longer in a conversation with this account, perhaps by a leave only the
/// server took).
pub(crate) fn one_member_may_cause(e: &ClientError) -> bool {
    matches!(e, ClientError::Mls(_))
        || matches!(e.code(), Some(ErrorCode::InvalidMessage | ErrorCode::Forbidden))
}

impl Client {
    /// Leaves a group. The server stops delivering to this device at once; an admin commits
    /// the removal. The last admin first hands the role to another member.
    pub async fn group_leave(&mut self, group: &str) -> ClientResult<()> {
        let id = self.resolve_group(group)?;
        self.leave_conversation(&id).await
    }

    pub(crate) async fn leave_conversation(&mut self, id: &str) -> ClientResult<()> {
        let id = id.to_string();
        // A request to leave (or a commit) whose outcome was unknown goes first.
        self.settle_unsure(&id).await?;
        if self.local.conversation(&id)?.is_some_and(|c| c.left) {
            return Ok(());
        }
        let (_, meta, _) = self.current(&id)?;
        let me = self.me()?.username.clone();
        if meta.kind == GroupType::Group && meta.is_admin(&me) {
            self.hand_over_admin(&id, &me).await?;
        }
        // The account leaves, not only this device: its other devices go first, in one commit
        // (a member removes its own account's devices as it likes), then this one asks to.
        let own = self.me()?.signature_key.clone();
        self.commit_change(&id, |group, _| {
            let others: Vec<LeafNodeIndex> = group
                .members()
                .filter(|m| mls::identity(&m.credential).as_deref() == Some(me.as_str()))
                .filter(|m| m.signature_key != own)
                .map(|m| m.index)
                .collect();
            Ok((!others.is_empty()).then(|| Plan { removes: others, ..Default::default() }))
        })
        .await?;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let request = {
                let provider = self.provider();
                let signer = mls::load_signer(&provider, &self.me()?.signature_key)?;
                let mut group = self.load_group(&provider, &id)?;
                let proposal = group.leave_group(&provider, &signer).map_err(ClientError::mls)?;
                HandshakeRequest {
                    message: B64(proposal.tls_serialize_detached().map_err(ClientError::mls)?),
                    welcome: None,
                }
            };
            match classify(self.api()?.handshake(&id, &request).await) {
                Answer::Done(_) => return self.left(&id),
                Answer::Unknown(e) => {
                    self.local.keep_unsure(&id, Unsure::Leave, &request_json(&request)?)?;
                    return Err(e);
                }
                Answer::Refused(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    self.sync_inner().await?;
                }
                Answer::Refused(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol("the group kept changing; try again".into()))
    }

    /// This device's request to leave was applied.
    pub(crate) fn left(&mut self, id: &str) -> ClientResult<()> {
        let group = self.local.conversation(id)?.is_some_and(|c| c.kind == ConversationKind::Group);
        if group {
            self.note(id, SystemEvent::Left { who: self.me()?.username.clone() })?;
        }
        self.local.set_left(id, now_millis())?;
        // The group's state stays: messages queued for this device before the leave took
        // effect still arrive and must be readable (a chat's deletion drops the state itself).
        Ok(())
    }

    /// Before an admin leaves: it stops being one, and if it was the last, the role goes to the
    /// first other member by name who is staying. Decided on the group as the commit is built
    /// (so again after every catch-up): a member whose leave is pending is no heir.
    async fn hand_over_admin(&mut self, id: &str, me: &str) -> ClientResult<()> {
        self.change_admins(id, |group, admins| {
            let mut staying = staying_members(group);
            staying.remove(me);
            admins.retain(|a| staying.contains(a));
            if admins.is_empty()
                && let Some(heir) = staying.first()
            {
                admins.push(heir.clone());
            }
        })
        .await
    }

    /// Brings this device's copy of the group up to date before an admin acts on it: fetches
    /// what waits and completes pending leaves, so the action is decided on the group as it is.
    pub(super) async fn catch_up_in(&mut self, id: &str) -> ClientResult<()> {
        self.sync_inner().await?;
        self.commit_pending_in(id).await
    }

    /// Commits the requests to leave this device holds for the conversation, if any: MLS
    /// allows no message while a proposal is pending, and any member may complete another's
    /// leave — so a member's message is not held up until an admin syncs.
    pub(crate) async fn commit_pending_in(&mut self, id: &str) -> ClientResult<()> {
        let pending = {
            let provider = self.provider();
            self.load_group(&provider, id)?.pending_proposals().next().is_some()
        };
        if !pending {
            return Ok(());
        }
        // The plan is empty: the commit completes what waits (and names an heir if need be).
        self.commit_change(id, |_, _| Ok(Some(Plan::default()))).await
    }

    /// Completes the pending requests to leave in every group this device is in. Any member
    /// does, not only an admin: the admin may be one who never joined (it dropped the
    /// invitation), and a leave must never wait on it. When several members try at once, the
    /// server takes one commit and the others find the leave done after catching up.
    pub(crate) async fn commit_pending_leaves(&mut self) -> ClientResult<()> {
        let groups: Vec<String> =
            self.local.groups()?.into_iter().filter(|c| !c.left).map(|c| c.id).collect();
        for id in groups {
            self.commit_pending_in(&id).await?;
        }
        Ok(())
    }

    /// Builds a commit of what `plan` says (see [`Plan`]; `None`: nothing to do), sends it,
    /// and merges it once the server accepted it. When another commit won the epoch
    /// (`stale_epoch`), it drops its own, catches up and plans again.
    pub(crate) async fn commit_change<F>(&mut self, id: &str, mut plan: F) -> ClientResult<()>
    where
        F: FnMut(&MlsGroup, &Settings) -> ClientResult<Option<Plan>>,
    {
        self.settle_unsure(id).await?;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let request = {
                let provider = self.provider();
                let signer = mls::load_signer(&provider, &self.me()?.signature_key)?;
                let mut group = self.load_group(&provider, id)?;
                // Out of it (removed, or left) since the caller looked: nothing to commit.
                if !group.is_active() {
                    return Err(ClientError::refused(
                        Refusal::NotInConversation,
                        "this device is no longer in that conversation",
                    ));
                }
                let Some(todo) = plan(&group, &self.settings_of(id)?)? else { return Ok(()) };
                let Some(built) = self.build_commit(id, &mut group, &provider, &signer, todo)?
                else {
                    return Ok(());
                };
                self.local.stage_settings(id, built.record.as_deref())?;
                let ser = |m: MlsMessageOut| m.tls_serialize_detached().map_err(ClientError::mls);
                HandshakeRequest {
                    message: B64(ser(built.commit)?),
                    welcome: built.welcome.map(ser).transpose()?.map(B64),
                }
            };
            match classify(self.api()?.handshake(id, &request).await) {
                Answer::Done(_) => return self.settle_commit(id, true),
                // Applied or not, nobody can say now: kept, staged, for the next attempt.
                Answer::Unknown(e) => {
                    self.local.keep_unsure(id, Unsure::Commit, &request_json(&request)?)?;
                    return Err(e);
                }
                Answer::Refused(e) => {
                    self.settle_commit(id, false)?;
                    if e.code() == Some(ErrorCode::NotAMember) {
                        // Removed while this device was offline: it learns by whom.
                        self.sync_inner().await?;
                        if self.local.conversation(id)?.is_some_and(|c| c.left) {
                            return Err(self.no_longer_in(id)?);
                        }
                    }
                    if e.code() != Some(ErrorCode::StaleEpoch) {
                        return Err(e);
                    }
                }
            }
            self.sync_inner().await?;
            self.complete_unseen_leaves(id).await?;
        }
        Err(ClientError::Protocol("the group kept changing; try again".into()))
    }

    /// This device's staged commit was applied by the server (merged here, with the settings
    /// it carried) or refused (dropped).
    pub(crate) fn settle_commit(&self, id: &str, applied: bool) -> ClientResult<()> {
        let provider = self.provider();
        let mut group = self.load_group(&provider, id)?;
        let record = self.local.take_staged_settings(id)?;
        if !applied {
            return group.clear_pending_commit(provider.storage()).map_err(ClientError::mls);
        }
        group.merge_pending_commit(&provider).map_err(ClientError::mls)?;
        let epoch = group.epoch().as_u64();
        match record.as_deref().and_then(Settings::from_record) {
            Some(settings) => self.local.set_settings(id, epoch, &settings, record.as_deref())?,
            None => {
                let timer = self.settings_of(id)?.timer;
                self.local.note_epoch_timer(id, epoch, timer)?
            }
        }
        Ok(())
    }

    /// The commit `plan` asks for on `group` (see [`Plan`]), staged; `None` when it changes
    /// nothing.
    fn build_commit(
        &self,
        id: &str,
        group: &mut MlsGroup,
        provider: &Provider<'_>,
        signer: &SignatureKeyPair,
        plan: Plan,
    ) -> ClientResult<Option<Built>> {
        let me = self.me()?.username.clone();
        let before = mls::meta_of(group)
            .ok_or_else(|| ClientError::Mls("the group lacks the Kith extension".into()))?;
        let mut removed = pending_removals(group);
        removed.extend(plan.removes.iter().copied());
        let mut members_after: BTreeSet<String> = group
            .members()
            .filter(|m| !removed.contains(&m.index))
            .filter_map(|m| mls::identity(&m.credential))
            .collect();
        members_after
            .extend(plan.adds.iter().filter_map(|kp| mls::identity(kp.leaf_node().credential())));
        let mut after = before.clone();
        if before.kind == GroupType::Group {
            let chosen = plan.admins.as_ref().unwrap_or(&before.admins);
            after.admins = kept_admins(chosen, &members_after);
        }
        // The settings: new ones; or, from whoever may set them, those this device holds, when
        // the context has none yet (a conversation from before settings were epoch state) or
        // joiners need a record this device does not have.
        let may_set = match before.kind {
            GroupType::Direct => true,
            GroupType::Group => before.is_admin(&me),
            GroupType::Story => false,
        };
        let known = self.local.settings_record(id)?.filter(|r| {
            before.settings.as_deref() == Some(kith_proto::settings::digest(r).as_str())
        });
        let resettle = before.settings.is_none() || (!plan.adds.is_empty() && known.is_none());
        let new = match plan.settings {
            Some(s) => Some(s),
            None if may_set && resettle => Some(self.settings_of(id)?),
            None => None,
        };
        let committed = new.map(|s| Committed::new(provider, s)).transpose()?;
        if let Some(c) = &committed {
            after.settings = Some(c.digest.clone());
        }
        let for_joiners = committed.as_ref().map(|c| c.record.clone()).or(known);
        let change_context = after != before;
        let leaf = mls::certifying_leaf(group, self.own_certificate()?.as_ref())?;
        let nothing = !change_context
            && plan.adds.is_empty()
            && plan.removes.is_empty()
            && !plan.self_update
            && group.pending_proposals().next().is_none();
        if nothing {
            return Ok(None);
        }
        if let Some(c) = &committed {
            let sealed = epoch_settings::seal(provider, group, &c.record)?;
            group.set_aad(sealed);
        }
        let adds = !plan.adds.is_empty();
        let mut builder = group
            .commit_builder()
            .propose_adds(plan.adds)
            .propose_removals(plan.removes)
            .force_self_update(plan.self_update)
            .leaf_node_parameters(leaf);
        if change_context {
            builder = builder
                .propose_group_context_extensions(mls::meta_extensions(&after)?)
                .map_err(ClientError::mls)?;
        }
        let mut loaded = builder.load_psks(provider.storage()).map_err(ClientError::mls)?;
        if adds && let Some(record) = &for_joiners {
            loaded = loaded
                .create_group_info_with_extensions([epoch_settings::welcome_extension(record)])
                .map_err(ClientError::mls)?;
        }
        let bundle = loaded
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .map_err(ClientError::mls)?
            .stage_commit(provider)
            .map_err(ClientError::mls)?;
        let (commit, welcome, _) = bundle.into_messages();
        Ok(Some(Built { commit, welcome, record: committed.map(|c| c.record) }))
    }

    /// A commit is refused until it includes every pending request to leave. If the server
    /// holds one this device never got (its proposal did not verify here, say), an admin
    /// completes it by removing the member outright — so nobody can freeze a group with a
    /// request only the server kept.
    async fn complete_unseen_leaves(&mut self, id: &str) -> ClientResult<()> {
        let pending = self.api()?.pending_leaves(id).await?.leaves;
        if pending.is_empty() {
            return Ok(());
        }
        let me = self.me()?.username.clone();
        let unseen: Vec<LeafNodeIndex> = {
            let provider = self.provider();
            let group = self.load_group(&provider, id)?;
            let seen = pending_removals(&group);
            let admin = mls::meta_of(&group).is_some_and(|m| m.is_admin(&me));
            let unseen: Vec<LeafNodeIndex> = pending
                .iter()
                .map(|p| LeafNodeIndex::new(p.leaf))
                .filter(|leaf| !seen.contains(leaf))
                // The server's word that someone asked to leave is checked against the tree.
                .filter(|leaf| {
                    group.member(*leaf).and_then(mls::identity).is_some_and(|u| {
                        pending.iter().any(|p| p.leaf == leaf.u32() && p.username == u)
                    })
                })
                .collect();
            if !unseen.is_empty() && !admin {
                return Err(ClientError::refused(
                    Refusal::GroupRules,
                    "a member's request to leave is pending; an admin of the group must \
                     complete it first",
                ));
            }
            unseen
        };
        if unseen.is_empty() {
            return Ok(());
        }
        // Another commit may win meanwhile: the caller's next attempt catches up.
        let plan = |_: &MlsGroup, _: &Settings| {
            Ok(Some(Plan { removes: unseen.clone(), ..Plan::default() }))
        };
        match Box::pin(self.commit_change(id, plan)).await {
            Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => Ok(()),
            other => other,
        }
    }
}
