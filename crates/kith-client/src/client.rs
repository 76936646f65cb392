//! [`Client`]: one device's profile and everything it does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use kith_proto::*;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use rusqlite::Connection;
use tokio_tungstenite::tungstenite;

use crate::api::Api;
use crate::error::{ClientError, ClientResult};
use crate::local::{self, Conversation, ConversationKind, Message, Profile};
use crate::mls::{self, Provider};
use crate::payload::Payload;

/// One-time KeyPackages uploaded at registration and kept topped up.
const KEY_PACKAGE_TARGET: usize = 50;
/// Below this many on the server, a sync uploads more.
const KEY_PACKAGE_LOW: u64 = 15;
/// Largest text a message may carry.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Entries asked for per fetch.
const FETCH_PAGE: u32 = 200;

/// What a sync or a push brought.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// New messages, in the order they were received.
    pub messages: Vec<Message>,
    /// Conversations this device joined.
    pub joined: Vec<String>,
    /// Entries that could not be used (undecryptable, malformed, forged sender) and were
    /// dropped; they are counted, never shown.
    pub dropped: u32,
    /// Entries the server delivered again that were already processed.
    pub duplicates: u32,
}

enum Outcome {
    Message(Message),
    Joined(String),
    Nothing,
}

/// A device's profile: keys, MLS state and local history in one folder.
pub struct Client {
    dir: PathBuf,
    conn: Connection,
    crypto: RustCrypto,
    profile: Option<Profile>,
}

/// Shows the folder and the username, never the token or keys.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("dir", &self.dir)
            .field("username", &self.profile.as_ref().map(|p| p.username.as_str()))
            .finish_non_exhaustive()
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> ClientResult<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

fn conversation_bytes(id: &str) -> ClientResult<Vec<u8>> {
    ConversationId::parse(id)
        .map(|c| c.as_bytes().to_vec())
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

impl Client {
    /// Opens the profile in `dir`, creating the folder and its database if needed.
    pub fn open(dir: impl AsRef<Path>) -> ClientResult<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut conn = Connection::open(dir.join("kith.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA secure_delete = ON;",
        )?;
        mls::migrate(&mut conn)?;
        local::migrate(&conn)?;
        let profile = local::load_profile(&conn)?;
        Ok(Client { dir, conn, crypto: RustCrypto::default(), profile })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registered account, if any.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    fn me(&self) -> ClientResult<&Profile> {
        self.profile.as_ref().ok_or(ClientError::NotRegistered)
    }

    fn api(&self) -> ClientResult<Api> {
        let me = self.me()?;
        Api::new(&me.server, Some(me.bearer()))
    }

    fn provider(&self) -> Provider<'_> {
        Provider::new(&self.crypto, &self.conn)
    }

    /// Registers a new account with this device as its first, on `server`.
    pub async fn register(
        &mut self,
        server: &str,
        username: &str,
        kind: AccountKind,
    ) -> ClientResult<Profile> {
        if let Some(p) = &self.profile {
            return Err(ClientError::AlreadyRegistered(p.username.clone()));
        }
        validate_username(username).map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        let api = Api::new(server, None)?;
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
        };
        local::save_profile(&self.conn, &profile)?;
        self.profile = Some(profile.clone());
        Ok(profile)
    }

    /// The server's view of this device.
    pub async fn whoami(&self) -> ClientResult<WhoAmI> {
        self.api()?.whoami().await
    }

    /// An account's devices, as the server lists them.
    pub async fn devices(&self, username: &str) -> ClientResult<DeviceList> {
        self.api()?.devices(username).await
    }

    /// Sends `text` to `peer` in a 1:1 conversation, opening one if there is none.
    pub async fn send_text(&mut self, peer: &str, text: &str) -> ClientResult<Message> {
        validate_username(peer).map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        if text.is_empty() {
            return Err(ClientError::InvalidInput("the message is empty".into()));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(ClientError::InvalidInput(format!(
                "the message is longer than {MAX_TEXT_BYTES} bytes"
            )));
        }
        let conversation = self.direct_conversation(peer).await?;
        self.send_payload(&conversation, ConversationKind::Direct, text).await
    }

    /// The 1:1 conversation with `peer`: the newest one known, or a new one.
    pub async fn direct_conversation(&mut self, peer: &str) -> ClientResult<String> {
        let me = self.me()?.clone();
        if peer == me.username {
            return Err(ClientError::InvalidInput(
                "you cannot open a conversation with yourself".into(),
            ));
        }
        if let Some(c) = local::direct_with(&self.conn, peer)? {
            return Ok(c.id);
        }
        let api = self.api()?;
        let claimed = api.claim(peer).await?;
        let (id, devices, welcome) = self.create_group(&me, peer, claimed)?;
        let created = api
            .create_conversation(&CreateConversation {
                conversation_id: id.clone(),
                members: devices,
                welcome: B64(welcome),
            })
            .await;
        if let Err(e) = created {
            self.forget_group(&id);
            return Err(e);
        }
        local::add_conversation(
            &self.conn,
            &Conversation {
                id: id.clone(),
                kind: ConversationKind::Direct,
                peer: Some(peer.to_string()),
                created_at: now_millis(),
            },
        )?;
        Ok(id)
    }

    /// Creates the MLS group with one device of `peer` per claimed KeyPackage. Returns the
    /// conversation id, the added devices and the Welcome.
    fn create_group(
        &self,
        me: &Profile,
        peer: &str,
        claimed: ClaimResponse,
    ) -> ClientResult<(String, Vec<u64>, Vec<u8>)> {
        let provider = self.provider();
        let signer = mls::load_signer(&provider, &me.signature_key)?;
        let mut key_packages = Vec::new();
        let mut devices = Vec::new();
        for c in claimed.key_packages {
            let kp = KeyPackageIn::tls_deserialize_exact(&c.key_package.0)
                .map_err(ClientError::mls)?
                .validate(provider.crypto(), ProtocolVersion::Mls10)
                .map_err(|e| ClientError::Mls(format!("{peer}'s KeyPackage is invalid: {e}")))?;
            if mls::identity(kp.leaf_node().credential()).as_deref() != Some(peer) {
                return Err(ClientError::Mls(format!(
                    "the server handed out a KeyPackage that is not {peer}'s"
                )));
            }
            key_packages.push(kp);
            devices.push(c.device_id);
        }
        if key_packages.is_empty() {
            return Err(ClientError::Protocol(format!("{peer} has no KeyPackage")));
        }
        let id = random_hex(16)?;
        let group_id = GroupId::from_slice(&conversation_bytes(&id)?);
        let mut group = MlsGroup::new_with_group_id(
            &provider,
            &signer,
            &mls::create_config(),
            group_id,
            mls::credential(&me.username, &signer),
        )
        .map_err(ClientError::mls)?;
        let (_commit, welcome, _info) =
            group.add_members(&provider, &signer, &key_packages).map_err(ClientError::mls)?;
        group.merge_pending_commit(&provider).map_err(ClientError::mls)?;
        let welcome = welcome.tls_serialize_detached().map_err(ClientError::mls)?;
        Ok((id, devices, welcome))
    }

    /// Deletes a group's MLS state (after the server refused to create it).
    fn forget_group(&self, id: &str) {
        let provider = self.provider();
        if let Ok(bytes) = conversation_bytes(id)
            && let Ok(Some(mut group)) =
                MlsGroup::load(provider.storage(), &GroupId::from_slice(&bytes))
        {
            let _ = group.delete(provider.storage());
        }
    }

    async fn send_payload(
        &mut self,
        conversation: &str,
        kind: ConversationKind,
        text: &str,
    ) -> ClientResult<Message> {
        let me = self.me()?.clone();
        let now = now_millis();
        let payload = Payload::text(random_hex(16)?, text.to_string(), now);
        let bytes = {
            let provider = self.provider();
            let signer = mls::load_signer(&provider, &me.signature_key)?;
            let gid = GroupId::from_slice(&conversation_bytes(conversation)?);
            let mut group = MlsGroup::load(provider.storage(), &gid)
                .map_err(ClientError::mls)?
                .ok_or_else(|| ClientError::UnknownConversation(conversation.to_string()))?;
            let out = group
                .create_message(&provider, &signer, &payload.encode())
                .map_err(ClientError::mls)?;
            out.tls_serialize_detached().map_err(ClientError::mls)?
        };
        self.api()?.send(conversation, &SendMessage { message: B64(bytes) }).await?;
        let message = Message {
            id: payload.id,
            conversation: conversation.to_string(),
            kind,
            from: me.username,
            text: payload.text,
            sent_at: now,
            received_at: now,
            outgoing: true,
        };
        local::insert_message(&self.conn, &message)?;
        Ok(message)
    }

    /// Fetches everything waiting on the server, processes it and acknowledges it.
    pub async fn sync(&mut self) -> ClientResult<SyncReport> {
        let api = self.api()?;
        let mut report = SyncReport::default();
        let mut after = 0;
        loop {
            let page = api.fetch(after, FETCH_PAGE).await?;
            let Some(last) = page.entries.last() else {
                break;
            };
            after = last.seq;
            let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
            for entry in &page.entries {
                self.process_entry(entry, &mut report)?;
            }
            api.ack(&seqs).await?;
            if !page.more {
                break;
            }
        }
        if !report.joined.is_empty() {
            self.replenish_key_packages().await?;
        }
        Ok(report)
    }

    /// Processes entries obtained some other way (a custom transport, a replay). Entries
    /// already processed are counted as duplicates; nothing is acknowledged to the server.
    pub fn receive_entries(&mut self, entries: &[QueueEntry]) -> ClientResult<SyncReport> {
        let mut report = SyncReport::default();
        for entry in entries {
            self.process_entry(entry, &mut report)?;
        }
        Ok(report)
    }

    /// Uploads KeyPackages when the server holds few.
    pub async fn replenish_key_packages(&mut self) -> ClientResult<u64> {
        let api = self.api()?;
        let remaining = api.whoami().await?.key_packages_remaining;
        if remaining >= KEY_PACKAGE_LOW {
            return Ok(remaining);
        }
        let me = self.me()?.clone();
        let fresh = {
            let provider = self.provider();
            let signer = mls::load_signer(&provider, &me.signature_key)?;
            let n = KEY_PACKAGE_TARGET.saturating_sub(usize::try_from(remaining).unwrap_or(0));
            mls::key_packages(&provider, &signer, &me.username, n, false)?
        };
        let resp = api
            .upload_key_packages(&UploadKeyPackages {
                key_packages: fresh.into_iter().map(B64).collect(),
                last_resort_key_package: None,
            })
            .await?;
        Ok(resp.key_packages_remaining)
    }

    /// Processes one queue entry in one local transaction. An entry that cannot be used is
    /// dropped (and counted); a local storage failure is returned and nothing is acknowledged.
    fn process_entry(&mut self, entry: &QueueEntry, report: &mut SyncReport) -> ClientResult<()> {
        if local::was_processed(&self.conn, entry.message_id)? {
            report.duplicates += 1;
            return Ok(());
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let outcome = self.process_in_transaction(entry);
        match outcome {
            Ok(outcome) => {
                local::mark_processed(&self.conn, entry.message_id, now_millis())?;
                self.conn.execute_batch("COMMIT")?;
                match outcome {
                    Outcome::Message(m) => report.messages.push(m),
                    Outcome::Joined(id) => report.joined.push(id),
                    Outcome::Nothing => {}
                }
                Ok(())
            }
            Err(e @ (ClientError::Storage(_) | ClientError::Io(_))) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
            Err(e) => {
                self.conn.execute_batch("ROLLBACK")?;
                tracing::warn!(message_id = entry.message_id, kind = ?entry.kind, error = %e, "dropped an unusable message");
                local::mark_processed(&self.conn, entry.message_id, now_millis())?;
                report.dropped += 1;
                Ok(())
            }
        }
    }

    fn process_in_transaction(&self, entry: &QueueEntry) -> ClientResult<Outcome> {
        let me = self.me()?;
        let conversation = conversation_bytes(&entry.conversation_id)?;
        let provider = self.provider();
        let message =
            MlsMessageIn::tls_deserialize_exact(&entry.data.0).map_err(ClientError::mls)?;
        match entry.kind {
            EntryKind::Welcome => {
                let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
                    return Err(ClientError::Mls("a welcome entry without a Welcome".into()));
                };
                let staged =
                    StagedWelcome::new_from_welcome(&provider, &mls::join_config(), welcome, None)
                        .map_err(ClientError::mls)?;
                let group = staged.into_group(&provider).map_err(ClientError::mls)?;
                if group.group_id().as_slice() != conversation.as_slice() {
                    return Err(ClientError::Mls("the Welcome is for another conversation".into()));
                }
                let others: BTreeSet<String> = group
                    .members()
                    .filter_map(|m| mls::identity(&m.credential))
                    .filter(|u| *u != me.username)
                    .collect();
                let (kind, peer) = match others.len() {
                    1 if others.contains(&entry.sender) => {
                        (ConversationKind::Direct, Some(entry.sender.clone()))
                    }
                    _ => (ConversationKind::Group, None),
                };
                local::add_conversation(
                    &self.conn,
                    &Conversation {
                        id: entry.conversation_id.clone(),
                        kind,
                        peer,
                        created_at: entry.server_time,
                    },
                )?;
                Ok(Outcome::Joined(entry.conversation_id.clone()))
            }
            EntryKind::Message => {
                let gid = GroupId::from_slice(&conversation);
                let mut group = MlsGroup::load(provider.storage(), &gid)
                    .map_err(ClientError::mls)?
                    .ok_or_else(|| {
                        ClientError::UnknownConversation(entry.conversation_id.clone())
                    })?;
                let protocol = message.try_into_protocol_message().map_err(ClientError::mls)?;
                let processed =
                    group.process_message(&provider, protocol).map_err(ClientError::mls)?;
                let sender = mls::identity(processed.credential());
                match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(app) => {
                        if sender.as_deref() != Some(entry.sender.as_str()) {
                            return Err(ClientError::Mls(
                                "the MLS sender is not the account the server says sent it".into(),
                            ));
                        }
                        let payload = Payload::decode(&app.into_bytes())
                            .ok_or_else(|| ClientError::Mls("unreadable payload".into()))?;
                        let kind = local::conversation(&self.conn, &entry.conversation_id)?
                            .map(|c| c.kind)
                            .unwrap_or(ConversationKind::Direct);
                        let m = Message {
                            id: payload.id,
                            conversation: entry.conversation_id.clone(),
                            kind,
                            from: entry.sender.clone(),
                            text: payload.text,
                            sent_at: payload.sent_at,
                            received_at: now_millis(),
                            outgoing: false,
                        };
                        if local::insert_message(&self.conn, &m)? {
                            Ok(Outcome::Message(m))
                        } else {
                            Ok(Outcome::Nothing)
                        }
                    }
                    ProcessedMessageContent::StagedCommitMessage(staged) => {
                        group.merge_staged_commit(&provider, *staged).map_err(ClientError::mls)?;
                        Ok(Outcome::Nothing)
                    }
                    ProcessedMessageContent::ProposalMessage(proposal) => {
                        group
                            .store_pending_proposal(provider.storage(), *proposal)
                            .map_err(ClientError::mls)?;
                        Ok(Outcome::Nothing)
                    }
                    _ => Ok(Outcome::Nothing),
                }
            }
        }
    }

    /// The local history with `peer` (every 1:1 conversation with them), oldest first.
    pub fn history(&self, peer: &str) -> ClientResult<Vec<Message>> {
        Ok(local::history_with(&self.conn, peer)?)
    }

    /// The local history of one conversation by id, oldest first.
    pub fn conversation_history(&self, conversation: &str) -> ClientResult<Vec<Message>> {
        Ok(local::history_of(&self.conn, conversation)?)
    }

    /// Opens the push channel: everything waiting, then new entries as they arrive.
    pub async fn connect_push(&self) -> ClientResult<PushConnection> {
        use tungstenite::client::IntoClientRequest;
        let api = self.api()?;
        let mut request = api
            .ws_url()
            .into_client_request()
            .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        let bearer = format!("Bearer {}", api.bearer().unwrap_or_default());
        request.headers_mut().insert(
            "authorization",
            bearer.parse().map_err(|_| ClientError::Protocol("unusable token".into()))?,
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| match e {
            tungstenite::Error::Http(resp) if resp.status().as_u16() == 401 => {
                ClientError::Server {
                    status: 401,
                    code: ErrorCode::Unauthorized,
                    message: "the server refused this device's token".into(),
                }
            }
            other => ClientError::Network(other.to_string()),
        })?;
        Ok(PushConnection { ws })
    }

    /// Waits for the next pushed frame, processes its entries and acknowledges them.
    pub async fn receive_push(&mut self, push: &mut PushConnection) -> ClientResult<SyncReport> {
        loop {
            let frame = push
                .ws
                .next()
                .await
                .ok_or_else(|| ClientError::Network("the push channel closed".into()))?
                .map_err(|e| ClientError::Network(e.to_string()))?;
            let text = match frame {
                tungstenite::Message::Text(t) => t,
                tungstenite::Message::Close(_) => {
                    return Err(ClientError::Network("the server closed the push channel".into()));
                }
                _ => continue,
            };
            let ServerFrame::Entries { entries } = serde_json::from_str(text.as_str())
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let report = self.receive_entries(&entries)?;
            let ack = ClientFrame::Ack { seqs: entries.iter().map(|e| e.seq).collect() };
            let ack =
                serde_json::to_string(&ack).map_err(|e| ClientError::Protocol(e.to_string()))?;
            push.ws
                .send(tungstenite::Message::Text(ack.into()))
                .await
                .map_err(|e| ClientError::Network(e.to_string()))?;
            if !report.joined.is_empty() {
                self.replenish_key_packages().await?;
            }
            return Ok(report);
        }
    }
}

/// A live push channel from [`Client::connect_push`].
pub struct PushConnection {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}
