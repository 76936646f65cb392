//! [`Client`]: one device's profile and everything it does.

use std::path::{Path, PathBuf};

use kith_proto::*;
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;

use crate::api::Api;
use crate::error::{ClientError, ClientResult};
use crate::local::{LocalStore, Message, Profile};
use crate::mls::{self, Provider};

/// A device's profile: keys, MLS state and local history in one folder.
pub struct Client {
    pub(crate) dir: PathBuf,
    /// The profile's database, MLS state included: the one owner of its connection.
    pub(crate) local: LocalStore,
    pub(crate) crypto: RustCrypto,
    pub(crate) profile: Option<Profile>,
    /// Whether the client checks admin rights and the size limit itself before asking the
    /// server. Tests turn it off to show the server enforces them too.
    pub(crate) local_checks: bool,
    /// Added to the wall clock when deciding what has expired; tests move it forward.
    pub(crate) clock_offset_ms: u64,
    /// A CA certificate to trust, given before registration.
    pub(crate) pending_ca: Option<String>,
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
    pub(crate) defer_shown: bool,
    /// A recovery code made since this client was opened, until it is shown (see
    /// [`Client::take_recovery_code`]); never stored.
    pub(crate) fresh_recovery_code: Option<crate::RecoveryCode>,
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

impl Client {
    /// Opens the profile in `dir`, creating the folder and its database if needed. It blocks
    /// (up to 30 s) while another command holds the profile: from async code, call it through
    /// `tokio::task::spawn_blocking`.
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
        let local = LocalStore::open(&dir)?;
        // The profile's files (keys, history) are the owner's alone, like its folder.
        #[cfg(unix)]
        for name in ["kith.db", "kith.db-wal", "kith.db-shm", "kith.lock"] {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.join(name);
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let profile = local.load_profile()?;
        let client = Self::assemble(dir, local, profile, Some(lock));
        client.purge_expired()?;
        Ok(client)
    }

    /// A client on a connection of its own to the same profile.
    pub(crate) fn assemble(
        dir: PathBuf,
        local: LocalStore,
        profile: Option<Profile>,
        lock: Option<std::fs::File>,
    ) -> Self {
        Client {
            dir,
            local,
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
            fresh_recovery_code: None,
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
    pub(crate) fn http(&self, ca: Option<&str>) -> ClientResult<reqwest::Client> {
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
            self.local.set_ca_cert(pem)?;
        }
        Ok(())
    }

    pub(crate) fn provider(&self) -> Provider<'_> {
        Provider::new(&self.crypto, self.local.conn())
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
    pub(crate) fn with_group<T, E: From<ClientError>>(
        &self,
        provider: &Provider<'_>,
        id: &str,
        f: impl FnOnce(&mut MlsGroup) -> Result<T, E>,
    ) -> Result<T, E> {
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

    /// The local history with `peer` (every 1:1 conversation with them), oldest first.
    /// Messages whose time is up are left out (and deleted by the next sync).
    pub fn history(&self, peer: &str) -> ClientResult<Vec<Message>> {
        Ok(self.local.history_with(peer, self.expiry_now())?)
    }

    /// The local history of one conversation by id, oldest first, leaving out messages whose
    /// time is up.
    pub fn conversation_history(&self, conversation: &str) -> ClientResult<Vec<Message>> {
        Ok(self.local.history_of(conversation, self.expiry_now())?)
    }
}
