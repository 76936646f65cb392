//! [`Client`]: one device's profile and everything it does.

use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use kith_proto::*;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use rusqlite::Connection;
use tokio_tungstenite::tungstenite;

use crate::api::Api;
use crate::error::{ClientError, ClientResult, Refusal};
use crate::local::{self, Message, Profile};
use crate::mls::{self, Provider};
pub use crate::report::{Problem, ProblemKind, SyncReport};

/// One-time KeyPackages uploaded at registration and kept topped up.
const KEY_PACKAGE_TARGET: usize = 50;
/// Below this many on the server, a sync uploads more.
const KEY_PACKAGE_LOW: u64 = 15;
/// How often a sync checks the KeyPackages the server holds, when nothing was joined.
const KEY_PACKAGE_CHECK: std::time::Duration = std::time::Duration::from_secs(600);
/// How often a fresh last-resort KeyPackage is uploaded (it lives twelve weeks).
const LAST_RESORT_RENEWAL: std::time::Duration = std::time::Duration::from_secs(28 * 86_400);
/// The upkeep record of the last-resort KeyPackage's renewal.
const LAST_RESORT: &str = "last_resort_key_package";
/// Entries asked for per fetch.
const FETCH_PAGE: u32 = 200;
/// Pages one sync fetches at most (200,000 entries).
const MAX_PAGES: u32 = 1000;

/// What processing one entry produced.
/// Entries held at most (see [`SyncReport::held`]); past it the oldest are dropped.
const MAX_HELD: u64 = 1000;
/// Invitations from one account held at most, waiting for it to become a contact.
const MAX_HELD_PER_INVITER: u64 = 20;

#[derive(Default)]
pub(crate) struct Outcome {
    pub messages: Vec<Message>,
    pub joined: Option<String>,
}

/// A device's profile: keys, MLS state and local history in one folder.
pub struct Client {
    pub(crate) dir: PathBuf,
    pub(crate) conn: Connection,
    pub(crate) crypto: RustCrypto,
    pub(crate) profile: Option<Profile>,
    /// Whether the client checks admin rights and the size limit itself before asking the
    /// server. Tests turn it off to show the server enforces them too.
    pub(crate) local_checks: bool,
    /// Added to the wall clock when deciding what has expired; tests move it forward.
    pub(crate) clock_offset_ms: u64,
    /// A CA certificate to trust, given before registration.
    pending_ca: Option<String>,
    /// Groups loaded for sending and receiving, kept between messages so each message does
    /// not re-read the whole group state. Storage stays the source of truth: an entry is
    /// dropped whenever its group is changed another way or an operation on it fails.
    group_cache: std::cell::RefCell<std::collections::HashMap<String, MlsGroup>>,
    /// This device's signing key, read and parsed once.
    signer_cache: std::cell::OnceCell<crate::signer::DeviceSigner>,
    /// Senders' keys, parsed, for checking franking signatures.
    pub(crate) verifiers: crate::signer::Verifiers,
    /// Accounts whose registered device keys were fetched during this round of processing.
    pub(crate) keys_fetched: crate::keys::Fetched,
    /// When a sync last checked the KeyPackages the server holds for this device.
    pub(crate) key_packages_checked: std::cell::Cell<Option<std::time::Instant>>,
    /// One HTTP client for every call, so connections are reused; built at the first call,
    /// and again when the trusted CA changes.
    http: std::cell::RefCell<Option<reqwest::Client>>,
    /// Held (locked) while this `Client` lives: one process per profile. A [`crate::View`]'s
    /// client has none: it lives in the process that holds the lock.
    _lock: Option<std::fs::File>,
    /// See [`Client::defer_shown`].
    defer_shown: bool,
}

/// How long opening a profile waits for another process that holds it.
const PROFILE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Groups kept loaded at most (a cache, not a limit on conversations).
const GROUP_CACHE: usize = 64;

/// Shows the folder and the username, never the token or keys.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("dir", &self.dir)
            .field("username", &self.profile.as_ref().map(|p| p.username.as_str()))
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn random_hex(bytes: usize) -> ClientResult<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

pub(crate) fn conversation_bytes(id: &str) -> ClientResult<Vec<u8>> {
    ConversationId::parse(id)
        .map(|c| c.as_bytes().to_vec())
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

/// One process at a time per profile: two interleaving group changes on one device would
/// split its MLS state. A brief holder (a command) is waited for a while; one that stays (the
/// app) is named at once. The lock file says who holds it: `stays` or `brief`, then a name.
fn lock_profile(dir: &Path, holder: &str, stays: bool) -> ClientResult<std::fs::File> {
    use std::io::Write;
    let path = dir.join("kith.lock");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    let waited = std::time::Instant::now();
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let said = std::fs::read_to_string(&path).unwrap_or_default();
                let (kind, name) = said.split_once('\n').unwrap_or(("brief", ""));
                if kind == "stays" || waited.elapsed() >= PROFILE_LOCK_WAIT {
                    let name = name.trim();
                    return Err(ClientError::ProfileInUse {
                        path: dir.display().to_string(),
                        holder: if name.is_empty() { "another kith process" } else { name }.into(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
    lock.set_len(0)?;
    (&lock).write_all(format!("{}\n{holder}", if stays { "stays" } else { "brief" }).as_bytes())?;
    Ok(lock)
}

/// Whether the server accepts the token `api` calls with (`false` only when it says no).
async fn in_force(api: &Api) -> ClientResult<bool> {
    match api.whoami().await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(ErrorCode::Unauthorized) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A connection to the profile's database in `dir`, as every handle on it uses it.
pub(crate) fn connect(dir: &Path) -> ClientResult<Connection> {
    let conn = Connection::open(dir.join("kith.db"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA secure_delete = ON;",
    )?;
    Ok(conn)
}

impl Client {
    /// Opens the profile in `dir`, creating the folder and its database if needed.
    pub fn open(dir: impl AsRef<Path>) -> ClientResult<Self> {
        Self::open_as(dir, "another kith process", false)
    }

    /// [`Client::open`], naming the holder (say, "the Kith app") to a process that finds the
    /// profile in use meanwhile. A holder that `stays` (it keeps the profile open until it
    /// is stopped) is not waited for: others are told at once who holds it.
    pub fn open_as(dir: impl AsRef<Path>, holder: &str, stays: bool) -> ClientResult<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let lock = lock_profile(&dir, holder, stays)?;
        let mut conn = connect(&dir)?;
        // The profile's files (keys, history) are the owner's alone, like its folder.
        #[cfg(unix)]
        for name in ["kith.db", "kith.db-wal", "kith.db-shm", "kith.lock"] {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.join(name);
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        mls::migrate(&mut conn)?;
        local::migrate(&conn)?;
        let profile = local::load_profile(&conn)?;
        let client = Self::assemble(dir, conn, profile, Some(lock));
        client.purge_expired()?;
        Ok(client)
    }

    /// A client on a connection of its own to the same profile.
    pub(crate) fn assemble(
        dir: PathBuf,
        conn: Connection,
        profile: Option<Profile>,
        lock: Option<std::fs::File>,
    ) -> Self {
        Client {
            dir,
            conn,
            crypto: RustCrypto::default(),
            profile,
            local_checks: true,
            clock_offset_ms: 0,
            pending_ca: None,
            group_cache: Default::default(),
            signer_cache: Default::default(),
            verifiers: Default::default(),
            keys_fetched: Default::default(),
            key_packages_checked: Default::default(),
            http: Default::default(),
            _lock: lock,
            defer_shown: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registered account, if any.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// For tests of the server's own enforcement: skip the client's admin and size checks.
    #[doc(hidden)]
    pub fn set_local_checks(&mut self, on: bool) {
        self.local_checks = on;
    }

    /// For tests: let this device's clock run ahead, so timers and expiries come due.
    #[doc(hidden)]
    pub fn advance_clock(&mut self, by: std::time::Duration) {
        self.clock_offset_ms += u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    }

    /// The time expiry is judged by.
    pub(crate) fn expiry_now(&self) -> u64 {
        now_millis().saturating_add(self.clock_offset_ms)
    }

    pub(crate) fn me(&self) -> ClientResult<&Profile> {
        self.profile.as_ref().ok_or(ClientError::NotRegistered)
    }

    pub(crate) fn api(&self) -> ClientResult<Api> {
        let me = self.me()?;
        Api::new(
            self.http(me.ca_cert.as_deref())?,
            &me.server,
            Some(me.bearer()),
            me.ca_cert.as_deref(),
        )
    }

    /// The HTTP client every call shares (see [`Client::api`]).
    fn http(&self, ca: Option<&str>) -> ClientResult<reqwest::Client> {
        let mut kept = self.http.borrow_mut();
        if let Some(http) = kept.as_ref() {
            return Ok(http.clone());
        }
        let http = crate::api::http_client(ca)?;
        *kept = Some(http.clone());
        Ok(http)
    }

    /// Trusts this CA certificate (PEM) for the server, besides the usual web roots: for a
    /// server with a private certificate. Call it before `register`; it is kept in the profile.
    pub fn trust_ca_pem(&mut self, pem: &str) -> ClientResult<()> {
        crate::tls::check_pem(pem)?;
        self.pending_ca = Some(pem.to_string());
        // Connections are made anew with the new trust.
        self.http.replace(None);
        if let Some(p) = &mut self.profile {
            p.ca_cert = Some(pem.to_string());
            local::set_ca_cert(&self.conn, pem)?;
        }
        Ok(())
    }

    pub(crate) fn provider(&self) -> Provider<'_> {
        Provider::new(&self.crypto, &self.conn)
    }

    /// This device's signing key, read from the profile once.
    pub(crate) fn signer(
        &self,
        provider: &Provider<'_>,
    ) -> ClientResult<&crate::signer::DeviceSigner> {
        if self.signer_cache.get().is_none() {
            let pair = mls::load_signer(provider, &self.me()?.signature_key)?;
            let _ = self.signer_cache.set(crate::signer::DeviceSigner::new(&pair)?);
        }
        self.signer_cache.get().ok_or_else(|| ClientError::Mls("no signing key".into()))
    }

    /// Runs `f` on the conversation's group, loading it only if it is not kept already. If `f`
    /// fails the group is dropped from the cache (its in-memory state may have moved on without
    /// storage).
    pub(crate) fn with_group<T>(
        &self,
        provider: &Provider<'_>,
        id: &str,
        f: impl FnOnce(&mut MlsGroup) -> ClientResult<T>,
    ) -> ClientResult<T> {
        let mut cache = self.group_cache.borrow_mut();
        if !cache.contains_key(id) {
            let group =
                MlsGroup::load(provider.storage(), &GroupId::from_slice(&conversation_bytes(id)?))
                    .map_err(ClientError::mls)?
                    .ok_or_else(|| ClientError::UnknownConversation(id.to_string()))?;
            if cache.len() >= GROUP_CACHE {
                cache.clear();
            }
            cache.insert(id.to_string(), group);
        }
        let group = cache.get_mut(id).ok_or_else(|| ClientError::UnknownConversation(id.into()))?;
        let result = f(group);
        if result.is_err() {
            cache.remove(id);
        }
        result
    }

    /// Drops kept groups: one that is about to change another way, or all after a rollback.
    pub(crate) fn forget_cached(&self, id: Option<&str>) {
        let mut cache = self.group_cache.borrow_mut();
        match id {
            Some(id) => {
                cache.remove(id);
            }
            None => cache.clear(),
        }
    }

    /// Registers a new account with this device as its first, on `server`.
    pub async fn register(
        &mut self,
        server: &str,
        username: &str,
        kind: AccountKind,
    ) -> ClientResult<Profile> {
        self.register_with_profile(server, username, kind, None).await
    }

    /// Registers a business with its public profile: a display name and a description anyone
    /// can find in the directory.
    pub async fn register_business(
        &mut self,
        server: &str,
        username: &str,
        display_name: &str,
        description: &str,
    ) -> ClientResult<Profile> {
        let profile = Some((display_name.to_string(), description.to_string()));
        self.register_with_profile(server, username, AccountKind::Business, profile).await
    }

    async fn register_with_profile(
        &mut self,
        server: &str,
        username: &str,
        kind: AccountKind,
        profile: Option<(String, String)>,
    ) -> ClientResult<Profile> {
        if let Some(p) = &self.profile {
            return Err(ClientError::AlreadyRegistered(p.username.clone()));
        }
        validate_username(username)
            .map_err(|e| ClientError::refused(Refusal::BadUsername, e.to_string()))?;
        let ca = self.pending_ca.clone();
        let api = Api::new(self.http(ca.as_deref())?, server, None, ca.as_deref())?;
        let request = {
            let provider = self.provider();
            let signer =
                SignatureKeyPair::new(SignatureScheme::ED25519).map_err(ClientError::mls)?;
            signer.store(provider.storage()).map_err(ClientError::mls)?;
            let key_packages =
                mls::key_packages(&provider, &signer, username, KEY_PACKAGE_TARGET, false)?;
            let last = mls::key_packages(&provider, &signer, username, 1, true)?
                .pop()
                .ok_or_else(|| ClientError::Mls("no last-resort KeyPackage".into()))?;
            RegisterRequest {
                username: username.to_string(),
                kind,
                credential_key: B64(signer.to_public_vec()),
                key_packages: key_packages.into_iter().map(B64).collect(),
                last_resort_key_package: B64(last),
                display_name: profile.as_ref().map(|p| p.0.clone()),
                description: profile.as_ref().map(|p| p.1.clone()),
                // Chosen here, so a registration whose answer was lost can be posted again
                // and be answered as registered (see `Api::register`).
                token: Some(Secret::new(random_hex(32)?)),
            }
        };
        let response = api.register(&request).await?;
        let profile = Profile {
            server: api.base().to_string(),
            username: response.username,
            kind,
            device_id: response.device_id,
            token: response.token,
            signature_key: request.credential_key.0,
            ca_cert: self.pending_ca.clone(),
        };
        local::save_profile(&self.conn, &profile)?;
        local::set_upkeep_at(&self.conn, LAST_RESORT, now_millis())?;
        self.profile = Some(profile.clone());
        Ok(profile)
    }

    /// Replaces this device's token with a new one and keeps it in the profile: for a token
    /// that may have leaked (a copied profile folder, a lost backup). Copies of the profile
    /// made before stop working; so do push connections opened before.
    ///
    /// The new token is chosen here and kept aside with the signed request before it is
    /// sent: if the outcome is not known (no answer, a gateway's 502 or 504), the next sync
    /// settles it (see [`Client::settle_token`]), so the device is never left with a token
    /// the server no longer accepts.
    pub async fn rotate_token(&mut self) -> ClientResult<()> {
        self.settle_token().await?;
        let me = self.me()?;
        let chosen = Secret::new(random_hex(32)?);
        let signature = {
            use openmls_traits::crypto::OpenMlsCrypto as _;
            use openmls_traits::signatures::Signer as _;
            let provider = self.provider();
            let hash = |t: &Secret| {
                provider
                    .crypto()
                    .hash(openmls::prelude::HashType::Sha2_256, t.expose().as_bytes())
                    .map_err(ClientError::mls)
            };
            let signed = RotateTokenRequest::signed_bytes(
                me.device_id,
                &hash(&me.token)?,
                Some(&hash(&chosen)?),
            );
            self.signer(&provider)?
                .sign(&signed)
                .map_err(|_| ClientError::Mls("cannot sign the rotation".into()))?
        };
        local::set_pending_rotation(&self.conn, Some((&chosen, &signature)))?;
        match self.finish_rotation(false).await {
            // Not known (only the answer may have been lost): settled at once if it can be.
            Err(_) if local::pending_rotation(&self.conn)?.is_some() => {
                self.finish_rotation(true).await
            }
            done => done,
        }
    }

    /// Settles a rotation whose outcome is not known yet (its answer was lost): keeps the new
    /// token if the server holds it, or asks for it again. Nothing to do without one; a sync
    /// and a push connection do it first.
    pub(crate) async fn settle_token(&mut self) -> ClientResult<()> {
        self.finish_rotation(true).await
    }

    /// Posts the pending rotation (after first asking whether its token is in force already,
    /// when `look_first`) until its outcome is known. The signed request names the token it
    /// replaces, so posting it again is safe: once the new token is in force, the old one —
    /// and with it any copy of the request still on its way — is refused.
    async fn finish_rotation(&mut self, look_first: bool) -> ClientResult<()> {
        let Some((token, signature)) = local::pending_rotation(&self.conn)? else {
            return Ok(());
        };
        if look_first && in_force(&self.trial_api(&token)?).await? {
            return self.adopt_token(token);
        }
        let request =
            RotateTokenRequest { signature: B64(signature), new_token: Some(token.clone()) };
        match self.api()?.rotate_token(&request).await {
            // The token the server says it holds (the chosen one, unless it made its own).
            Ok(fresh) => self.adopt_token(fresh.token),
            // The old token is refused: a copy of the request got there first.
            Err(e) if e.code() == Some(ErrorCode::Unauthorized) => {
                if in_force(&self.trial_api(&token)?).await? {
                    return self.adopt_token(token);
                }
                Err(e)
            }
            Err(e @ ClientError::Server { status: 400..=499, .. }) => {
                local::set_pending_rotation(&self.conn, None)?;
                Err(e)
            }
            // Not known: kept for the next attempt.
            Err(e) => Err(e),
        }
    }

    /// Calls to the server as this device with `token`.
    fn trial_api(&self, token: &Secret) -> ClientResult<Api> {
        let mut trial = self.me()?.clone();
        trial.token = token.clone();
        let ca = trial.ca_cert.as_deref();
        Api::new(self.http(ca)?, &trial.server, Some(trial.bearer()), ca)
    }

    /// The token the server holds for this device from now on.
    fn adopt_token(&mut self, token: Secret) -> ClientResult<()> {
        // Saved before anything else can fail: from now on only the new token works.
        local::set_token(&self.conn, &token)?;
        local::set_pending_rotation(&self.conn, None)?;
        if let Some(p) = &mut self.profile {
            p.token = token;
        }
        Ok(())
    }

    /// The server's view of this device.
    pub async fn whoami(&mut self) -> ClientResult<WhoAmI> {
        self.api()?.whoami().await
    }

    /// An account's devices, as the server lists them.
    pub async fn devices(&mut self, username: &str) -> ClientResult<DeviceList> {
        self.api()?.devices(username).await
    }

    /// Brings this device up to date, in four steps, each reported:
    /// 1. fetches everything waiting on the server, processes it and acknowledges it;
    /// 2. completes the pending requests of members to leave its groups;
    /// 3. brings the story channel's members in line with the contacts
    ///    ([`Client::sync_story_channel`]; `story_audience_changed`);
    /// 4. deletes the messages whose time is up ([`Client::purge_expired`]; `expired`).
    pub async fn sync(&mut self) -> ClientResult<SyncReport> {
        self.settle().await?;
        let mut report = SyncReport::default();
        if let Err(e) = self.sync_inner_into(&mut report).await {
            // Reached nothing: the caller hears why. Part-way: what came is shown.
            if e.is_local() || !report.took_anything() {
                return Err(e);
            }
            report.problems.push(Problem {
                kind: ProblemKind::Unreached,
                conversation: String::new(),
                user: None,
                detail: e.to_string(),
            });
        } else {
            // Each upkeep step on its own: one that fails is reported, the others run.
            if let Err(e) = self.commit_pending_leaves().await {
                report.upkeep_failed(e)?;
            }
            match self.tend_story_audience(&mut report).await {
                Ok(changed) => report.story_audience_changed = changed,
                Err(e) => report.upkeep_failed(e)?,
            }
        }
        report.expired = self.purge_expired()?;
        report.messages = self.hand_over()?;
        report.missed_while_full(&local::take_missed(&self.conn)?);
        Ok(report)
    }

    /// What this device stored and has not handed to the caller yet: what this call received,
    /// and what an earlier one took in without returning it — a catch-up inside a send, or a
    /// sync cut short. Each message is handed over exactly once; one whose time is up is not.
    fn hand_over(&mut self) -> ClientResult<Vec<Message>> {
        if self.defer_shown {
            return Ok(local::unshown(&self.conn, self.expiry_now())?);
        }
        Ok(local::take_unshown(&self.conn, self.expiry_now())?)
    }

    /// For a caller whose hand-over can be cut short after the call returns (a process that
    /// prints, then may be killed): messages stay unshown — returned again by the next call —
    /// until [`Client::mark_shown`] says they reached their reader. A cut between the two
    /// shows a message twice, never loses it.
    pub fn defer_shown(&mut self, on: bool) {
        self.defer_shown = on;
    }

    /// These messages reached their reader (see [`Client::defer_shown`]).
    pub fn mark_shown(&self, messages: &[Message]) -> ClientResult<()> {
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        Ok(local::mark_shown(&self.conn, &ids)?)
    }

    /// Fetch, process and acknowledge, without committing anything.
    pub(crate) async fn sync_inner(&mut self) -> ClientResult<SyncReport> {
        let mut report = SyncReport::default();
        self.sync_inner_into(&mut report).await?;
        Ok(report)
    }

    async fn sync_inner_into(&mut self, report: &mut SyncReport) -> ClientResult<()> {
        // A commit whose outcome is unknown is settled before what arrived on top of it.
        self.settle_all_unsure().await;
        let api = self.api()?;
        self.retry_invitations(report).await?;
        let mut after = 0;
        // A server that keeps saying `more` (only a hostile one does, past this) does not keep
        // a sync going for ever: the rest waits for the next sync.
        for n in 0..MAX_PAGES {
            let page = api.fetch(after, FETCH_PAGE).await?;
            // Messages that skipped this device while its queue was full: told once, with the
            // first page, and acknowledged with it.
            let told = if n == 0 { page.missed } else { Vec::new() };
            local::note_missed(&self.conn, &told)?;
            // A page that does not move on (only a hostile server sends one) ends the loop.
            let Some(last) = page.entries.iter().map(Incoming::seq).max().filter(|l| *l > after)
            else {
                if !told.is_empty() {
                    api.ack_told(&[], &told).await?;
                    local::missed_acknowledged(&self.conn, &told)?;
                }
                break;
            };
            after = last;
            let seqs: Vec<u64> = page.entries.iter().map(Incoming::seq).collect();
            let entries = report.readable(page.entries);
            self.take_in(&entries, report).await?;
            api.ack_told(&seqs, &told).await?;
            local::missed_acknowledged(&self.conn, &told)?;
            if !page.more {
                break;
            }
        }
        // Joins use KeyPackages, and so do other people's claims (several claimers can take
        // up to the server's hourly budget): top up after a join, and otherwise every
        // `KEY_PACKAGE_CHECK` at most. What came in is kept whatever happens here.
        let due = self.key_packages_checked.get().is_none_or(|t| t.elapsed() >= KEY_PACKAGE_CHECK);
        if !report.joined.is_empty() || due {
            match self.replenish_key_packages().await {
                Ok(_) => self.key_packages_checked.set(Some(std::time::Instant::now())),
                Err(e) => report.upkeep_failed(e)?,
            }
        }
        Ok(())
    }

    /// Processes entries obtained some other way (a custom transport, a replay). Entries
    /// already processed are counted as duplicates; nothing is acknowledged to the server.
    /// (The server is asked only for device keys the entries name that this device has not
    /// seen yet.)
    pub async fn receive_entries(&mut self, entries: &[QueueEntry]) -> ClientResult<SyncReport> {
        let mut report = SyncReport::default();
        self.take_in(entries, &mut report).await?;
        report.messages = self.hand_over()?;
        Ok(report)
    }

    /// Invitations held because they came from someone who was not a contact yet (a story
    /// channel) go again once they are.
    async fn retry_invitations(&mut self, report: &mut SyncReport) -> ClientResult<()> {
        let waiting = local::held_invitations_from_contacts(&self.conn)?;
        if waiting.is_empty() {
            return Ok(());
        }
        let held = report.held;
        self.take_in(&waiting, report).await?;
        report.held = held;
        for entry in &waiting {
            if local::was_processed(&self.conn, entry.message_id)? {
                local::unhold(&self.conn, entry.message_id)?;
            }
        }
        Ok(())
    }

    /// Processes entries in order; an entry naming device keys not seen yet waits while they
    /// are fetched, then is processed again (see the `keys` module).
    async fn take_in(
        &mut self,
        entries: &[QueueEntry],
        report: &mut SyncReport,
    ) -> ClientResult<()> {
        self.keys_fetched.clear();
        let result = async {
            for entry in entries {
                let mut after_fetch = false;
                loop {
                    let step = if after_fetch && local::was_processed(&self.conn, entry.message_id)?
                    {
                        // It went through; one of the entries it freed waited for keys.
                        self.retry_held(&entry.conversation_id, report)
                    } else {
                        self.process_entry(entry, report)
                    };
                    match step {
                        Err(ClientError::NeedKeys(users)) => {
                            self.fetch_keys(&users).await?;
                            after_fetch = true;
                        }
                        other => {
                            other?;
                            break;
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        self.keys_fetched.clear();
        result
    }

    /// Uploads KeyPackages when the server holds few, and renews them all — a fresh
    /// last-resort KeyPackage and a fresh batch replacing the one-time ones — every
    /// [`LAST_RESORT_RENEWAL`] (a KeyPackage lives twelve weeks; the server hands out none that
    /// is about to expire, so KeyPackages left to age would make this account unreachable).
    pub async fn replenish_key_packages(&mut self) -> ClientResult<u64> {
        let api = self.api()?;
        let remaining = api.whoami().await?.key_packages_remaining;
        let renew = local::upkeep_at(&self.conn, LAST_RESORT)?.is_none_or(|at| {
            now_millis().saturating_sub(at) >= LAST_RESORT_RENEWAL.as_millis() as u64
        });
        if remaining >= KEY_PACKAGE_LOW && !renew {
            return Ok(remaining);
        }
        let me = self.me()?.clone();
        let (fresh, last_resort) = {
            let provider = self.provider();
            let signer = mls::load_signer(&provider, &me.signature_key)?;
            // At a renewal every one-time KeyPackage is replaced too (they live twelve weeks;
            // renewed every four, none is ever handed out expired).
            let n = if renew {
                KEY_PACKAGE_TARGET
            } else {
                KEY_PACKAGE_TARGET.saturating_sub(usize::try_from(remaining).unwrap_or(0))
            };
            let fresh = mls::key_packages(&provider, &signer, &me.username, n, false)?;
            let last_resort = if renew {
                mls::key_packages(&provider, &signer, &me.username, 1, true)?.pop()
            } else {
                None
            };
            (fresh, last_resort)
        };
        let resp = api
            .upload_key_packages(&UploadKeyPackages {
                key_packages: fresh.into_iter().map(B64).collect(),
                last_resort_key_package: last_resort.map(B64),
                replace: renew,
            })
            .await?;
        if renew {
            local::set_upkeep_at(&self.conn, LAST_RESORT, now_millis())?;
        }
        Ok(resp.key_packages_remaining)
    }

    /// Processes one queue entry in one local transaction. An entry that cannot be used is
    /// dropped (and counted); a local storage failure is returned and nothing is acknowledged.
    fn process_entry(&mut self, entry: &QueueEntry, report: &mut SyncReport) -> ClientResult<()> {
        if self.process_one(entry, report)? {
            self.retry_held(&entry.conversation_id, report)?;
        }
        Ok(())
    }

    /// Processes one entry; `true` when it changed the conversation (so entries held for it
    /// may now be usable).
    fn process_one(&mut self, entry: &QueueEntry, report: &mut SyncReport) -> ClientResult<bool> {
        if local::was_processed(&self.conn, entry.message_id)? {
            report.duplicates += 1;
            return Ok(false);
        }
        local::exec(&self.conn, "BEGIN IMMEDIATE")?;
        let outcome = self.process_in_transaction(entry);
        match outcome {
            Ok(outcome) => {
                local::mark_processed(&self.conn, entry.message_id, now_millis())?;
                local::exec(&self.conn, "COMMIT")?;
                report.messages.extend(outcome.messages);
                report.joined.extend(outcome.joined);
                Ok(true)
            }
            Err(e @ (ClientError::Storage(_) | ClientError::Io(_))) => {
                let _ = local::exec(&self.conn, "ROLLBACK");
                self.forget_cached(None);
                Err(e)
            }
            Err(e @ ClientError::NeedKeys(_)) => {
                // Not processed: tried again once the keys are fetched.
                local::exec(&self.conn, "ROLLBACK")?;
                self.forget_cached(None);
                Err(e)
            }
            Err(e @ (ClientError::NotYet(_) | ClientError::WaitsForContact { .. })) => {
                // Arrived before its Welcome or its epoch's commit (a reordering transport,
                // or a Welcome still on its way), or an invitation from someone not a contact
                // yet: kept, not marked processed, and tried again once the conversation moves
                // (or they become a contact). An invitation is kept under the name MLS gives
                // its sender, never the server's label, since that name decides its retry.
                local::exec(&self.conn, "ROLLBACK")?;
                self.forget_cached(None);
                tracing::debug!(message_id = entry.message_id, why = %e, "held a message for later");
                let mut kept = entry.clone();
                if let ClientError::WaitsForContact { adder } = e {
                    // One account's invitations are held up to a few: a stranger cannot push
                    // a friend's out of the held set with a flood of story channels.
                    if local::held_invitations_from(&self.conn, &adder)? >= MAX_HELD_PER_INVITER {
                        local::mark_processed(&self.conn, entry.message_id, now_millis())?;
                        report.dropped += 1;
                        report.problems.push(Problem {
                            kind: ProblemKind::Unjoinable,
                            conversation: entry.conversation_id.clone(),
                            user: None,
                            detail: format!("{adder} has more invitations waiting than are kept"),
                        });
                        return Ok(false);
                    }
                    kept.sender = adder;
                }
                local::hold(&self.conn, &kept, now_millis())?;
                report.held += 1;
                for old in local::held_over(&self.conn, MAX_HELD)? {
                    local::unhold(&self.conn, old)?;
                    local::mark_processed(&self.conn, old, now_millis())?;
                    report.dropped += 1;
                }
                Ok(false)
            }
            Err(e @ (ClientError::FromBlocked | ClientError::TooLate | ClientError::Copy)) => {
                local::exec(&self.conn, "ROLLBACK")?;
                self.forget_cached(None);
                local::mark_processed(&self.conn, entry.message_id, now_millis())?;
                match e {
                    ClientError::TooLate => report.too_late += 1,
                    ClientError::Copy => report.duplicates += 1,
                    _ => report.blocked += 1,
                }
                Ok(false)
            }
            Err(e) => {
                local::exec(&self.conn, "ROLLBACK")?;
                self.forget_cached(None);
                tracing::warn!(message_id = entry.message_id, kind = ?entry.kind, error = %e, "dropped an unusable message");
                local::mark_processed(&self.conn, entry.message_id, now_millis())?;
                report.dropped += 1;
                report.problems.push(Problem {
                    kind: match entry.kind {
                        EntryKind::Welcome => ProblemKind::Unjoinable,
                        EntryKind::Message => ProblemKind::Unreadable,
                    },
                    conversation: entry.conversation_id.clone(),
                    user: None,
                    detail: e.to_string(),
                });
                Ok(false)
            }
        }
    }

    /// Tries the conversation's held entries again, oldest first, until none makes progress.
    pub(crate) fn retry_held(
        &mut self,
        conversation: &str,
        report: &mut SyncReport,
    ) -> ClientResult<()> {
        loop {
            let held = local::held(&self.conn, conversation)?;
            let mut progress = false;
            for entry in &held {
                let was_held = report.held;
                progress |= self.process_one(entry, report)?;
                // Held again: it was counted when it first arrived.
                report.held = was_held;
                // Used or dropped for good: it leaves the held set only now, so a failure
                // part-way loses nothing.
                if local::was_processed(&self.conn, entry.message_id)? {
                    local::unhold(&self.conn, entry.message_id)?;
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// The local history with `peer` (every 1:1 conversation with them), oldest first.
    /// Messages whose time is up are left out (and deleted by the next sync).
    pub fn history(&self, peer: &str) -> ClientResult<Vec<Message>> {
        Ok(local::history_with(&self.conn, peer, self.expiry_now())?)
    }

    /// The local history of one conversation by id, oldest first, leaving out messages whose
    /// time is up.
    pub fn conversation_history(&self, conversation: &str) -> ClientResult<Vec<Message>> {
        Ok(local::history_of(&self.conn, conversation, self.expiry_now())?)
    }

    /// Opens the push channel: everything waiting, then new entries as they arrive.
    pub async fn connect_push(&mut self) -> ClientResult<PushConnection> {
        use tungstenite::client::IntoClientRequest;
        // What waited — kept handshakes, the outbox — goes first (see `crate::unsure`).
        self.settle().await?;
        let api = self.api()?;
        let mut request = api
            .ws_url()
            .into_client_request()
            .map_err(|e| ClientError::refused(Refusal::BadArgument, e.to_string()))?;
        let bearer =
            Secret::new(format!("Bearer {}", api.bearer().map(Secret::expose).unwrap_or_default()));
        request.headers_mut().insert(
            "authorization",
            bearer.expose().parse().map_err(|_| ClientError::Protocol("unusable token".into()))?,
        );
        // A server that takes the connection and then says nothing (packets dropped) must not
        // hold this side forever.
        let opening = async {
            let stream = crate::tls::connect(api.base(), api.ca_pem()).await?;
            tokio_tungstenite::client_async_with_config(request, stream, Some(push_config()))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(resp) if resp.status().as_u16() == 401 => {
                        ClientError::Server {
                            status: 401,
                            code: ErrorCode::Unauthorized,
                            message: "the server refused this device's token".into(),
                            retry_after: None,
                        }
                    }
                    other => ClientError::Network(other.to_string()),
                })
        };
        let (ws, _) = tokio::time::timeout(PUSH_OPEN_WAIT, opening).await.map_err(|_| {
            ClientError::Network("the server did not open the push channel in time".into())
        })??;
        Ok(PushConnection { ws, quiet: PUSH_QUIET, answer: PUSH_ANSWER, unreadable: Vec::new() })
    }

    /// Waits for the next pushed frame, processes its entries and acknowledges them.
    pub async fn receive_push(&mut self, push: &mut PushConnection) -> ClientResult<SyncReport> {
        let entries = push.next_entries().await?;
        self.take_pushed(push, &entries).await
    }

    /// Processes entries [`PushConnection::next_entries`] brought and acknowledges them on
    /// the push channel. Split from the wait so a caller that shares the client (the app)
    /// does not hold it while nothing arrives.
    pub async fn take_pushed(
        &mut self,
        push: &mut PushConnection,
        entries: &[kith_proto::QueueEntry],
    ) -> ClientResult<SyncReport> {
        self.settle_all_unsure().await;
        let mut report = SyncReport::default();
        let unreadable = std::mem::take(&mut push.unreadable);
        let mut seqs: Vec<u64> = unreadable.iter().map(Incoming::seq).collect();
        report.readable(unreadable);
        self.take_in(entries, &mut report).await?;
        report.messages = self.hand_over()?;
        seqs.extend(entries.iter().map(|e| e.seq));
        push.ack(seqs).await?;
        if !report.joined.is_empty() {
            self.replenish_key_packages().await?;
        }
        Ok(report)
    }
}

impl PushConnection {
    /// Waits for the next frame of entries the server pushes (without needing the client).
    ///
    /// A connection can die without a word (a laptop asleep, a network changed, a router that
    /// forgot it): after [`PushConnection::set_liveness`]'s `quiet` without a frame this side
    /// pings, and a server that has not answered `answer` later counts as gone — a
    /// [`ClientError::Network`], so the caller reconnects and catches up instead of waiting
    /// forever for messages that go elsewhere.
    pub async fn next_entries(&mut self) -> ClientResult<Vec<kith_proto::QueueEntry>> {
        let mut asked = false;
        loop {
            let wait = if asked { self.answer } else { self.quiet };
            let next = match tokio::time::timeout(wait, self.ws.next()).await {
                Ok(next) => next,
                Err(_) if !asked => {
                    let ping = self.ws.send(tungstenite::Message::Ping(Default::default()));
                    match tokio::time::timeout(self.answer, ping).await {
                        Ok(sent) => sent.map_err(|e| ClientError::Network(e.to_string()))?,
                        Err(_) => return Err(gone()),
                    }
                    asked = true;
                    continue;
                }
                Err(_) => return Err(gone()),
            };
            // Any frame (a pong among them) shows the server is there.
            asked = false;
            let frame = next
                .ok_or_else(|| ClientError::Network("the push channel closed".into()))?
                .map_err(|e| ClientError::Network(e.to_string()))?;
            let text = match frame {
                tungstenite::Message::Text(t) => t,
                tungstenite::Message::Close(_) => {
                    return Err(ClientError::Network("the server closed the push channel".into()));
                }
                _ => continue,
            };
            // Each entry read on its own: one that cannot be read hides nothing else.
            #[derive(serde::Deserialize)]
            struct Frame {
                entries: Vec<serde_json::Value>,
            }
            let frame: Frame = serde_json::from_str(text.as_str())
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let mut entries = Vec::new();
            for incoming in read_entries(frame.entries) {
                match incoming {
                    Incoming::Entry(e) => entries.push(e),
                    unreadable => self.unreadable.push(unreadable),
                }
            }
            return Ok(entries);
        }
    }

    /// How long the channel may be `quiet` before this side pings, and how long the server
    /// then has to `answer` (25 s and 10 s unless set).
    pub fn set_liveness(&mut self, quiet: std::time::Duration, answer: std::time::Duration) {
        self.quiet = quiet;
        self.answer = answer;
    }

    async fn ack(&mut self, seqs: Vec<u64>) -> ClientResult<()> {
        let ack = serde_json::to_string(&ClientFrame::Ack { seqs })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws
            .send(tungstenite::Message::Text(ack.into()))
            .await
            .map_err(|e| ClientError::Network(e.to_string()))
    }
}

/// The push socket's settings: tungstenite zeroes its whole read buffer before each read, so
/// its 128 KiB default cost more than the frames; 16 KiB holds a typical frame in one read.
fn push_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// A live push channel from [`Client::connect_push`].
pub struct PushConnection {
    ws: tokio_tungstenite::WebSocketStream<crate::tls::Stream>,
    quiet: std::time::Duration,
    answer: std::time::Duration,
    /// Pushed entries that could not be read, waiting for [`Client::take_pushed`] to
    /// acknowledge and report them.
    unreadable: Vec<Incoming>,
}

/// How long the push channel may be silent before the client pings (under the idle timeouts
/// of common NAT and proxies, so the ping also keeps the path open).
const PUSH_QUIET: std::time::Duration = std::time::Duration::from_secs(25);
/// How long a ping may go unanswered before the channel counts as gone.
const PUSH_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);
/// How long opening the push channel may take.
const PUSH_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

fn gone() -> ClientError {
    ClientError::Network("the server stopped answering on the push channel".into())
}
