//! Notes between this account's own devices: what one device does that the others should do
//! too but that is nobody else's business — today, chats read (a chat read on one device is
//! read on all). They are sealed with a key every device of the account derives from the
//! account key's secret (HKDF-SHA256, then ChaCha20-Poly1305 with a random nonce and the
//! username as associated data), posted to `POST /v1/me/notes`, and queued by the server for
//! the account's other devices (a `notice` entry). The server sees when a device posts one and
//! how big it is, never what it says.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use kith_proto::{B64, PostNote};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::client::Client;
use crate::error::{ClientError, ClientResult};

/// Something a device tells the account's other devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Note {
    /// `chat` (`@peer` or a group's id) was read up to `at` (Unix ms).
    Read { chat: String, at: u64 },
}

/// Notes in one post at most (more wait for the next).
const MAX_NOTES: usize = 64;

impl Client {
    fn note_cipher(&self) -> ClientResult<Option<(ChaCha20Poly1305, Vec<u8>)>> {
        let Some(seed) = self.local.account_key()? else { return Ok(None) };
        let hk = hkdf::Hkdf::<sha2_10::Sha256>::new(Some(b"kith own devices v1"), seed.expose());
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(b"notes", key.as_mut_slice())
            .map_err(|_| ClientError::Mls("cannot derive the notes key".into()))?;
        let aad = [b"kith note v1 ".as_slice(), self.me()?.username.as_bytes()].concat();
        Ok(Some((ChaCha20Poly1305::new(Key::from_slice(key.as_slice())), aad)))
    }

    /// Posts the reads this device made since the last post, sealed, for the account's other
    /// devices. Nothing to do without any, or without an account key.
    pub(crate) async fn share_reads(&mut self) -> ClientResult<()> {
        let reads = self.local.reads_to_share(MAX_NOTES)?;
        if reads.is_empty() {
            return Ok(());
        }
        let Some((cipher, aad)) = self.note_cipher()? else { return Ok(()) };
        let notes: Vec<Note> =
            reads.iter().map(|(chat, at)| Note::Read { chat: chat.clone(), at: *at }).collect();
        let plain = serde_json::to_vec(&notes).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad })
            .map_err(|_| ClientError::Mls("cannot seal a note".into()))?;
        let req = PostNote { data: B64([nonce.as_slice(), &sealed].concat()) };
        self.api()?.post_note(&req).await?;
        self.local.reads_shared(&reads)?;
        Ok(())
    }

    /// Opens and applies notes another device of this account sealed; what does not open
    /// (another account's key, a server's forgery) is ignored.
    pub(crate) fn take_note(&self, sealed: &[u8]) -> ClientResult<()> {
        let Some((cipher, aad)) = self.note_cipher()? else { return Ok(()) };
        if sealed.len() < 12 {
            return Ok(());
        }
        let (nonce, body) = sealed.split_at(12);
        let Ok(plain) = cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: &aad })
        else {
            tracing::debug!("a note that does not open, ignored");
            return Ok(());
        };
        let plain = Zeroizing::new(plain);
        let Ok(notes) = serde_json::from_slice::<Vec<Note>>(&plain) else { return Ok(()) };
        for note in notes.into_iter().take(MAX_NOTES) {
            match note {
                Note::Read { chat, at } => self.local.set_read(&chat, at)?,
            }
        }
        Ok(())
    }
}
