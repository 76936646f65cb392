//! Key transparency on the client (DESIGN.md, "Key transparency"). The server keeps an `akd`
//! directory of every account's keys; this device holds it to its word:
//!
//! - **Its keys** (the VRF's and the root-signing key) are taken on first contact and never
//!   change: a server that shows others is refused.
//! - **Its history**: every root this device takes is signed by that key, and follows from the
//!   newest one it took before by akd's append-only proofs, one per epoch. A second root for an
//!   epoch it saw, an epoch older than the newest it saw, or a proof that fails is refused, and
//!   kept on record (`kith device list` shows it).
//! - **Every account's keys**: before an account's devices are used (added to a group, their
//!   KeyPackages encrypted to, their leaves in a Welcome or commit accepted) the account key and
//!   device set the server lists must be the value its directory proves at the latest epoch
//!   (`kith_proto::kt::directory_value`). A change is published within seconds; until then the
//!   client waits (up to [`PUBLISH_WAIT`]), then refuses.
//! - **Its own account** ([`Client::check_own_keys`], at sync): every value the directory
//!   published since this device started must hold this device's account key, and the latest
//!   the devices the account lists. Anything else is a key or device someone else made.
//!
//! [`verify`] holds the checks themselves, with no profile: `kith audit` uses them.

use std::time::Duration;

use kith_proto::ErrorCode;
use kith_proto::kt::{KtRoot, directory_value, parse_value};

use crate::api::Api;
use crate::client::{Client, now_millis};
use crate::error::{ClientError, ClientResult, Refusal};
pub use crate::local::kt::KeyWarning;

/// How long a client waits for the directory to publish keys it was shown before refusing
/// them (the server publishes every couple of seconds).
pub const PUBLISH_WAIT: Duration = Duration::from_secs(12);
/// How often it asks again meanwhile.
const PUBLISH_POLL: Duration = Duration::from_millis(150);
/// How long a checked value is taken without a new lookup.
const RECHECK_MS: u64 = 10 * 60 * 1000;
/// How often a sync checks this account's own history.
const OWN_CHECK_MS: u64 = 60 * 1000;
const OWN_CHECK: &str = "kt_own_history";
/// The epoch from which this device checks its own account's values.
const OWN_SINCE: &str = "kt_own_since";

/// The checks, on their own.
pub mod verify {
    use akd_core::verify::history::{HistoryParams, HistoryVerificationParams};
    use kith_proto::kt::KtRoot;
    use kith_proto::kt::config::Config;
    use protobuf::Message;

    /// The root hash of a signed root, if `signing_key` signed it.
    pub fn signed_root(root: &KtRoot, signing_key: &[u8]) -> Result<[u8; 32], String> {
        if !kith_proto::kt::verify_root(signing_key, root.epoch, &root.root.0, &root.signature.0) {
            return Err(format!(
                "the root of epoch {} is not signed by the directory's key",
                root.epoch
            ));
        }
        root.root.0.as_slice().try_into().map_err(|_| "a root is not 32 bytes".to_string())
    }

    /// The value a lookup proof proves for `username` under `root` at `epoch`.
    pub fn lookup(
        vrf: &[u8],
        root: [u8; 32],
        epoch: u64,
        username: &str,
        proof: &[u8],
    ) -> Result<Vec<u8>, String> {
        let proof = akd_core::proto::specs::types::LookupProof::parse_from_bytes(proof)
            .map_err(|e| format!("the lookup proof does not decode: {e}"))?;
        let proof = akd_core::LookupProof::try_from(&proof)
            .map_err(|e| format!("the lookup proof does not decode: {e}"))?;
        akd_core::verify::lookup_verify::<Config>(
            vrf,
            root,
            epoch,
            akd_core::AkdLabel(username.as_bytes().to_vec()),
            proof,
        )
        .map(|r| r.value.0)
        .map_err(|e| format!("the lookup proof for {username} fails: {e}"))
    }

    /// Every (epoch, value) a history proof proves for `username`, newest first.
    pub fn history(
        vrf: &[u8],
        root: [u8; 32],
        epoch: u64,
        username: &str,
        proof: &[u8],
    ) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let proof = akd_core::proto::specs::types::HistoryProof::parse_from_bytes(proof)
            .map_err(|e| format!("the history proof does not decode: {e}"))?;
        let proof = akd_core::HistoryProof::try_from(&proof)
            .map_err(|e| format!("the history proof does not decode: {e}"))?;
        akd_core::verify::key_history_verify::<Config>(
            vrf,
            root,
            epoch,
            akd_core::AkdLabel(username.as_bytes().to_vec()),
            proof,
            HistoryVerificationParams::Default { history_params: HistoryParams::Complete },
        )
        .map(|rs| rs.into_iter().map(|r| (r.epoch, r.value.0)).collect())
        .map_err(|e| format!("the history proof for {username} fails: {e}"))
    }

    /// Whether `proof` shows the directory at `end_epoch` (root `end`) is the one at the epoch
    /// before (root `start`) with entries added, nothing changed or taken out.
    pub async fn append_only(
        proof: &[u8],
        start: [u8; 32],
        end: [u8; 32],
        end_epoch: u64,
    ) -> Result<(), String> {
        let p = akd_core::proto::specs::types::SingleAppendOnlyProof::parse_from_bytes(proof)
            .map_err(|e| format!("the audit proof of epoch {end_epoch} does not decode: {e}"))?;
        let p = akd::SingleAppendOnlyProof::try_from(&p)
            .map_err(|e| format!("the audit proof of epoch {end_epoch} does not decode: {e}"))?;
        akd::auditor::verify_consecutive_append_only::<Config>(&p, start, end, end_epoch)
            .await
            .map_err(|e| format!("epoch {end_epoch} does not follow from the one before: {e}"))
    }
}

fn split_view(from: &str, epoch: u64) -> String {
    format!(
        "{from}'s device was shown another key directory at epoch {epoch} than this device: the \
         server shows different people different keys (a split view). Compare safety numbers \
         with {from} in person"
    )
}

/// Why a directory check failed.
pub enum Failure {
    /// The directory itself broke its word: refuse, record, and say so.
    Directory(String),
    /// The server is unreachable or answered something else: no verdict.
    Other(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Other(e)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Other(e.into())
    }
}

/// Follows the directory from epoch `from` (root `hash`) to epoch `to`: each root signed by
/// `signing`, each epoch's append-only proof holding. Returns each (epoch, root) it took,
/// oldest first. Used by devices and by `kith audit` alike.
pub async fn follow_roots(
    api: &Api,
    signing: &[u8],
    (mut epoch, mut hash): (u64, [u8; 32]),
    to: u64,
) -> Result<Vec<(u64, [u8; 32])>, Failure> {
    if to < epoch {
        return Err(Failure::Directory(format!(
            "the server's key directory went back from epoch {epoch} to {to}"
        )));
    }
    let mut took = Vec::new();
    let mut page: Vec<KtRoot> = Vec::new();
    while epoch < to {
        // One page of roots serves several audit answers.
        if !page.iter().any(|r| r.epoch == epoch + 1) {
            page = api.kt_roots(epoch + 1).await?.roots;
        }
        let end = to.min(epoch + 64);
        let audit = api.kt_audit(epoch, end).await?;
        if audit.from != epoch || audit.to <= epoch || audit.proofs.len() as u64 != audit.to - epoch
        {
            return Err(Failure::Directory(format!(
                "the server's audit answer from epoch {epoch} is not the one asked for"
            )));
        }
        for (i, proof) in audit.proofs.iter().enumerate() {
            let next = epoch + 1 + i as u64;
            if !page.iter().any(|r| r.epoch == next) {
                page = api.kt_roots(next).await?.roots;
            }
            let Some(r) = page.iter().find(|r| r.epoch == next) else {
                return Err(Failure::Directory(format!(
                    "the server does not show the root of epoch {next}"
                )));
            };
            let next_hash = verify::signed_root(r, signing).map_err(Failure::Directory)?;
            verify::append_only(&proof.0, hash, next_hash, next)
                .await
                .map_err(Failure::Directory)?;
            took.push((next, next_hash));
            hash = next_hash;
        }
        epoch = audit.to;
    }
    Ok(took)
}

impl Client {
    /// The directory's keys: pinned on first contact.
    async fn kt_server_keys(&mut self, api: &Api) -> ClientResult<(Vec<u8>, Vec<u8>)> {
        if let Some(keys) = self.local.kt_keys()? {
            return Ok(keys);
        }
        let k = api.kt_keys().await?;
        self.local.set_kt_keys(&k.vrf_public_key.0, &k.signing_key.0)?;
        Ok((k.vrf_public_key.0, k.signing_key.0))
    }

    /// Takes `root` as this device's view of the directory if it follows from what this
    /// device took before; returns its hash.
    async fn kt_take_root(
        &mut self,
        api: &Api,
        signing: &[u8],
        root: &KtRoot,
    ) -> Result<[u8; 32], Failure> {
        let hash = verify::signed_root(root, signing).map_err(Failure::Directory)?;
        let fork = || {
            Failure::Directory(format!(
                "the server's key directory shows a second, different root for epoch {} (a \
                 forked directory)",
                root.epoch
            ))
        };
        match self.local.kt_root(root.epoch)? {
            Some(seen) if seen != hash => return Err(fork()),
            _ => {}
        }
        let head =
            self.local.kt_head()?.and_then(|(e, r)| Some((e, <[u8; 32]>::try_from(r).ok()?)));
        // Never back: an answer from before the newest epoch this device took is a replay
        // (the server answers every request at its latest epoch).
        match head {
            Some((h, _)) if root.epoch < h => {
                return Err(Failure::Directory(format!(
                    "the server's key directory went back from epoch {h} to {}",
                    root.epoch
                )));
            }
            Some((h, _)) if root.epoch == h => return Ok(hash),
            _ => {}
        }
        let Some(head) = head else {
            // First contact: the root is taken as it is.
            self.local.add_kt_root(root.epoch, &hash)?;
            return Ok(hash);
        };
        let took = follow_roots(api, signing, head, root.epoch).await?;
        for (e, h) in &took {
            self.local.add_kt_root(*e, h)?;
        }
        match took.last() {
            Some((_, end)) if *end == hash => Ok(hash),
            _ => Err(fork()),
        }
    }

    fn kt_refuse(&self, username: Option<&str>, own: bool, what: String) -> ClientError {
        if let Err(e) = self.local.add_key_warning(now_millis(), username, own, &what) {
            tracing::warn!(error = %e, "could not record a key directory warning");
        }
        tracing::warn!(%what, "key directory check failed");
        ClientError::refused(Refusal::KeyDirectory, what)
    }

    /// Checks that `username`'s account key and devices, as the server listed them, are what
    /// its key directory proves at its latest epoch; waits for a change to be published (up to
    /// [`PUBLISH_WAIT`]). A value checked in the last ten minutes is not asked again.
    pub(crate) async fn kt_check(
        &mut self,
        username: &str,
        account_key: Option<&[u8]>,
        devices: &[(u64, &[u8])],
    ) -> ClientResult<()> {
        let value = directory_value(account_key, devices);
        let now = now_millis();
        if let Some((checked, _, at)) = self.local.kt_checked(username)?
            && checked == value
            && now.saturating_sub(at) < RECHECK_MS
        {
            return Ok(());
        }
        let api = self.api()?;
        let (vrf, signing) = self.kt_server_keys(&api).await?;
        let started = std::time::Instant::now();
        loop {
            let seen = match api.kt_lookup(username).await {
                Ok(l) if l.username == username => {
                    let hash = match self.kt_take_root(&api, &signing, &l.root).await {
                        Ok(h) => h,
                        Err(Failure::Directory(what)) => {
                            return Err(self.kt_refuse(Some(username), false, what));
                        }
                        Err(Failure::Other(e)) => return Err(e),
                    };
                    let got = verify::lookup(&vrf, hash, l.root.epoch, username, &l.proof.0)
                        .map_err(|what| self.kt_refuse(Some(username), false, what))?;
                    if got == value {
                        self.local.set_kt_checked(username, &value, l.root.epoch, now_millis())?;
                        return Ok(());
                    }
                    Some(got)
                }
                Ok(_) => {
                    let what =
                        format!("the server answered a lookup of {username} with another account");
                    return Err(self.kt_refuse(Some(username), false, what));
                }
                Err(e) if e.code() == Some(ErrorCode::NotPublished) => None,
                Err(e) => return Err(e),
            };
            if started.elapsed() >= PUBLISH_WAIT {
                let what = match seen.as_deref().and_then(parse_value) {
                    Some((key, _)) if key.as_deref() != account_key => format!(
                        "the server gave {username}'s account key as one its key directory \
                         does not hold for them; their devices are not used"
                    ),
                    Some(_) => format!(
                        "the server lists devices for {username} that its key directory does \
                         not hold for them; they are not used"
                    ),
                    None => format!(
                        "the server's key directory holds nothing for {username}; their devices \
                         are not used"
                    ),
                };
                if let Err(e) =
                    self.local.add_key_warning(now_millis(), Some(username), false, &what)
                {
                    tracing::warn!(error = %e, "could not record a key directory warning");
                }
                return Err(ClientError::refused(Refusal::KeyNotPublished, what));
            }
            tokio::time::sleep(PUBLISH_POLL).await;
        }
    }

    /// Checks what the directory published for this device's own account: every value since
    /// this device started must hold its account key, and the latest the devices the server
    /// lists for the account. What fails is recorded and returned (loud, in `kith sync`, the
    /// app and `kith device list`). Runs at most once a minute unless `now` is set.
    pub async fn check_own_keys(&mut self, now: bool) -> ClientResult<Vec<KeyWarning>> {
        let due = self
            .local
            .upkeep_at(OWN_CHECK)?
            .is_none_or(|at| now_millis().saturating_sub(at) >= OWN_CHECK_MS);
        if !(now || due) {
            return Ok(vec![]);
        }
        let me = self.me()?.username.clone();
        let Some(own_key) = self.account_key()? else {
            return Ok(vec![]); // an account from before account keys
        };
        let api = self.api()?;
        let (vrf, signing) = self.kt_server_keys(&api).await?;
        let history = match api.kt_history().await {
            Ok(h) => h,
            // Not published yet (a new account): nothing anyone could have been shown. Once
            // this device saw its account published, the directory cannot lose it.
            Err(e) if e.code() == Some(ErrorCode::NotPublished) => {
                if self.local.upkeep_at(OWN_SINCE)?.is_some() {
                    self.local.add_key_warning(
                        now_millis(),
                        Some(&me),
                        true,
                        "the server's key directory no longer shows your account, which it \
                         published before",
                    )?;
                }
                return Ok(self.local.key_warnings(true)?);
            }
            Err(e) => return Err(e),
        };
        let hash = match self.kt_take_root(&api, &signing, &history.root).await {
            Ok(h) => h,
            Err(Failure::Directory(what)) => {
                let _ = self.kt_refuse(Some(&me), true, what);
                return Ok(self.local.key_warnings(true)?);
            }
            Err(Failure::Other(e)) => return Err(e),
        };
        let values = match verify::history(&vrf, hash, history.root.epoch, &me, &history.proof.0) {
            Ok(v) => v,
            Err(what) => {
                let _ = self.kt_refuse(Some(&me), true, what);
                return Ok(self.local.key_warnings(true)?);
            }
        };
        // Values from before this device held its key are another story (an account taken
        // back from a thief, say); from the first one holding it on, every one must.
        let since = match self.local.upkeep_at(OWN_SINCE)? {
            Some(e) => e,
            None => {
                let first = values
                    .iter()
                    .filter(|(_, v)| {
                        parse_value(v)
                            .is_some_and(|(k, _)| k.as_deref() == Some(own_key.as_slice()))
                    })
                    .map(|(e, _)| *e)
                    .min();
                match first {
                    Some(e) => {
                        self.local.set_upkeep_at(OWN_SINCE, e)?;
                        e
                    }
                    None => history.root.epoch + 1,
                }
            }
        };
        let at = now_millis();
        // The newest value too, whenever it was published: a directory that never showed this
        // device's key at all must not pass for one that did.
        let newest = values.iter().map(|(e, _)| *e).max();
        for (epoch, value) in values.iter().filter(|(e, _)| *e >= since || Some(*e) == newest) {
            match parse_value(value) {
                Some((Some(k), _)) if k == own_key => {}
                _ => self.local.add_key_warning(
                    at,
                    Some(&me),
                    true,
                    &format!(
                        "the server's key directory published an account key for you at epoch \
                         {epoch} that this device does not hold: someone else may be able to \
                         pass as you. Check `kith device list`, and take your account back with \
                         your recovery code if you did not do this"
                    ),
                )?,
            }
        }
        // The latest value's devices are the ones the account lists to its own devices.
        if let Some((_, latest)) = values.iter().max_by_key(|(e, _)| *e)
            && let Some((Some(_), digest)) = parse_value(latest)
        {
            let listed = api.devices(&me).await?;
            let devices: Vec<(u64, &[u8])> = listed
                .devices
                .iter()
                .map(|d| (d.device_id, d.credential_key.0.as_slice()))
                .collect();
            if kith_proto::kt::devices_digest(&devices) != digest {
                // A change may be on its way to the directory; only a lasting difference counts.
                let published = self.kt_check(&me, Some(&own_key), &devices).await;
                if published.is_err() {
                    self.local.add_key_warning(
                        at,
                        Some(&me),
                        true,
                        "the server's key directory lists devices for your account that your \
                         device list does not show (or the other way round)",
                    )?;
                }
            }
        }
        self.local.set_upkeep_at(OWN_CHECK, at)?;
        Ok(self.local.key_warnings(true)?)
    }

    /// Holds the root another person's device took (`seen`, from their message) against this
    /// device's: another root for an epoch both took is a split view, said loudly; a newer
    /// epoch is kept, and checked against the server's at the next sync
    /// ([`Client::check_peer_roots`]). No network: it runs while a message is taken in.
    pub(crate) fn compare_peer_root(
        &self,
        from: &str,
        seen: &kith_proto::payload::KtSeen,
    ) -> ClientResult<()> {
        match self.local.kt_root(seen.epoch)? {
            Some(mine) if mine != seen.root.0 => self.local.add_key_warning(
                now_millis(),
                Some(from),
                false,
                &split_view(from, seen.epoch),
            )?,
            Some(_) => {}
            None => {
                if self.local.kt_head()?.is_some_and(|(head, _)| seen.epoch > head) {
                    self.local.add_peer_root(seen.epoch, from, &seen.root.0)?;
                }
            }
        }
        Ok(())
    }

    /// The roots other people's devices took for epochs this device had not reached, each
    /// against the server's root for that epoch (taken the usual way: signed, and following
    /// from this device's newest by append-only proofs).
    pub(crate) async fn check_peer_roots(&mut self) -> ClientResult<()> {
        let pending = self.local.peer_roots()?;
        if pending.is_empty() {
            return Ok(());
        }
        let api = self.api()?;
        let (_, signing) = self.kt_server_keys(&api).await?;
        for (epoch, from, root) in pending {
            if self.local.kt_root(epoch)?.is_none() {
                let page = api.kt_roots(epoch).await?;
                match page.roots.iter().find(|r| r.epoch == epoch) {
                    Some(r) => match self.kt_take_root(&api, &signing, r).await {
                        Ok(_) => {}
                        Err(Failure::Directory(what)) => {
                            let _ = self.kt_refuse(None, false, what);
                        }
                        Err(Failure::Other(e)) => return Err(e),
                    },
                    None => self.local.add_key_warning(
                        now_millis(),
                        Some(&from),
                        false,
                        &format!(
                            "{from}'s device took key directory epoch {epoch}, which the server \
                             does not show this device (a split view)"
                        ),
                    )?,
                }
            }
            if let Some(mine) = self.local.kt_root(epoch)?
                && mine != root
            {
                self.local.add_key_warning(
                    now_millis(),
                    Some(&from),
                    false,
                    &split_view(&from, epoch),
                )?;
            }
            self.local.forget_peer_root(epoch, &from)?;
        }
        Ok(())
    }

    /// Key directory warnings on record, newest first (`unshown_only`: those not shown yet).
    pub fn key_warnings(&self, unshown_only: bool) -> ClientResult<Vec<KeyWarning>> {
        Ok(self.local.key_warnings(unshown_only)?)
    }

    /// The last week's key directory warnings, shown or not, newest first (what `kith device
    /// list` and the app show).
    pub fn recent_key_warnings(&self) -> ClientResult<Vec<KeyWarning>> {
        let week_ago = now_millis().saturating_sub(7 * 86_400_000);
        Ok(self.local.key_warnings(false)?.into_iter().filter(|w| w.at >= week_ago).collect())
    }

    /// Marks every warning shown (after the caller showed them).
    pub fn key_warnings_shown(&self) -> ClientResult<()> {
        Ok(self.local.mark_key_warnings_shown()?)
    }
}

/// What `kith audit` found: the directory's keys and the epochs whose proofs held.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditReport {
    pub server: String,
    /// The directory's root-signing key (hex): compare it with what others see.
    pub signing_key: String,
    /// The VRF key (hex).
    pub vrf_key: String,
    pub from: u64,
    /// The newest epoch checked.
    pub to: u64,
    /// Its root (hex).
    pub root: String,
    /// Epochs whose append-only proof was checked.
    pub epochs_checked: u64,
}

/// Why an audit failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The directory broke its word: a root not signed, an epoch that does not follow.
    #[error("the key directory fails its audit: {0}")]
    Failed(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Audits a server's key directory from its public endpoints alone: every root from `from`
/// (default 0) to the latest is signed by the directory's key, and each epoch follows from the
/// one before by its append-only proof. Anyone can run it against any server.
pub async fn audit(
    server: &str,
    ca: Option<&str>,
    from: Option<u64>,
) -> Result<AuditReport, AuditError> {
    let api = Api::new(crate::api::http_client(ca)?, server, None, ca)?;
    let keys = api.kt_keys().await?;
    let from = from.unwrap_or(0);
    let first = api.kt_roots(from).await?;
    if from > first.latest {
        return Err(AuditError::Client(ClientError::refused(
            Refusal::BadArgument,
            format!(
                "the server's latest epoch is {}: start an audit at it or before",
                first.latest
            ),
        )));
    }
    let Some(start) = first.roots.first().filter(|r| r.epoch == from) else {
        return Err(AuditError::Failed(format!(
            "the server shows no root for epoch {from} (its latest is {})",
            first.latest
        )));
    };
    let hash = verify::signed_root(start, &keys.signing_key.0).map_err(AuditError::Failed)?;
    let took = match follow_roots(&api, &keys.signing_key.0, (from, hash), first.latest).await {
        Ok(t) => t,
        Err(Failure::Directory(what)) => return Err(AuditError::Failed(what)),
        Err(Failure::Other(e)) => return Err(e.into()),
    };
    let (to, root) = took.last().copied().unwrap_or((from, hash));
    Ok(AuditReport {
        server: server.to_string(),
        signing_key: hex::encode(&keys.signing_key.0),
        vrf_key: hex::encode(&keys.vrf_public_key.0),
        from,
        to,
        root: hex::encode(root),
        epochs_checked: took.len() as u64,
    })
}
