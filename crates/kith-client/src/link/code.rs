//! The link code and the channel it keys.
//!
//! A code is `IIIII-IIIII-PPPPP-PPPPP@SERVER`: ten characters of the link's id (the server's
//! name for the session, chosen by it), ten of a password the linking device chose and the
//! server never sees (50 random bits), and the server's address. Characters are Crockford's
//! base32, read without regard to case, with `O` as `0` and `I`/`L` as `1`.
//!
//! Both devices feed the password to SPAKE2 (RustCrypto's `spake2`, symmetric mode, bound to
//! the link's id): each sends one message through the server, and both end with the same key
//! only if both used the same password. A server (or anyone) in the middle gets one guess per
//! code, and a code works once. From that key, HKDF-SHA256 derives one key per direction;
//! everything the devices then exchange is sealed with ChaCha20-Poly1305 under it.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use kith_proto::Secret;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use zeroize::Zeroizing;

use crate::error::{ClientError, ClientResult, Refusal};

/// Characters of a link id and of a password.
pub const PART: usize = 10;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Ten random characters of the alphabet (50 bits).
fn random_part() -> ClientResult<String> {
    let mut bytes = Zeroizing::new([0u8; PART]);
    getrandom::fill(bytes.as_mut_slice())
        .map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect())
}

/// A fresh link id.
pub fn random_id() -> ClientResult<String> {
    random_part()
}

fn bad_code(why: &str) -> ClientError {
    ClientError::refused(Refusal::BadLinkCode, why)
}

/// A link code: the link's id, the password, the server.
#[derive(Clone, Debug)]
pub struct LinkCode {
    pub id: String,
    pub password: Secret,
    pub server: String,
}

impl LinkCode {
    /// The code for the link `id` on `server`, with a fresh password.
    pub fn new(id: &str, server: &str) -> ClientResult<Self> {
        let password = Secret::new(random_part()?);
        Ok(LinkCode { id: id.to_string(), password, server: server.into() })
    }

    /// Reads a code as a person typed or a camera read it.
    pub fn parse(text: &str) -> ClientResult<Self> {
        let (code, server) = text
            .trim()
            .split_once('@')
            .ok_or_else(|| bad_code("a link code ends with @ and the server's address"))?;
        let chars: String = code
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            })
            .collect();
        if chars.len() != 2 * PART || !chars.bytes().all(|c| ALPHABET.contains(&c)) {
            return Err(bad_code(
                "a link code is 20 letters and digits in four groups of five, then @ and the \
                 server's address",
            ));
        }
        let server = server.trim();
        if server.is_empty() {
            return Err(bad_code("the link code names no server"));
        }
        let server =
            if server.contains("://") { server.to_string() } else { format!("https://{server}") };
        Ok(LinkCode {
            id: chars[..PART].to_string(),
            password: Secret::new(chars[PART..].to_string()),
            server,
        })
    }

    /// The code as shown: `IIIII-IIIII-PPPPP-PPPPP@SERVER`.
    pub fn show(&self) -> Secret {
        let all = format!("{}{}", self.id, self.password.expose());
        let groups: Vec<&str> = (0..4).map(|g| &all[g * 5..g * 5 + 5]).collect();
        Secret::new(format!("{}@{}", groups.join("-"), self.server))
    }

    /// Starts this side's half of the key exchange: the state to finish with, and the message
    /// for the other side.
    pub(crate) fn start(&self) -> (Exchange, Vec<u8>) {
        let identity = format!("kith link v1 {}", self.id);
        let (state, message) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(self.password.expose().as_bytes()),
            &Identity::new(identity.as_bytes()),
        );
        (Exchange(state), message)
    }
}

/// One side's half of the key exchange, until the other's message arrives.
pub struct Exchange(Spake2<Ed25519Group>);

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exchange([redacted])")
    }
}

/// Which way a sealed message goes.
#[derive(Clone, Copy, Debug)]
enum Direction {
    /// From the new device to the one that offered the link.
    ToLinking,
    /// From the device that offered the link to the new one.
    ToNew,
}

/// What a sealed message is: its direction's key, and its kind as associated data, so one
/// kind of message can never be opened as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum What {
    /// The new device's request (its credential key, its token's hash).
    Request,
    /// The new device's KeyPackages.
    KeyPackages,
    /// The handover (the account key, contacts, blocks).
    Handover,
    /// A chunk of the history.
    History,
}

impl What {
    fn direction(self) -> Direction {
        match self {
            What::Request | What::KeyPackages => Direction::ToLinking,
            What::Handover | What::History => Direction::ToNew,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            What::Request => b"kith link v1 request",
            What::KeyPackages => b"kith link v1 key packages",
            What::Handover => b"kith link v1 handover",
            What::History => b"kith link v1 history",
        }
    }
}

/// The channel's keys, one per direction.
pub(crate) struct Channel {
    to_linking: Zeroizing<[u8; 32]>,
    to_new: Zeroizing<[u8; 32]>,
}

impl Exchange {
    /// Finishes the exchange with the other side's message: the channel. Two different
    /// passwords give two different channels, and what one seals the other cannot open.
    pub(crate) fn finish(self, theirs: &[u8]) -> ClientResult<Channel> {
        let shared = Zeroizing::new(
            self.0
                .finish(theirs)
                .map_err(|_| bad_code("the other device's answer is not valid"))?,
        );
        let hk = hkdf::Hkdf::<sha2_10::Sha256>::new(Some(b"kith link v1"), &shared);
        let mut to_linking = Zeroizing::new([0u8; 32]);
        let mut to_new = Zeroizing::new([0u8; 32]);
        hk.expand(b"to the linking device", to_linking.as_mut_slice())
            .and_then(|()| hk.expand(b"to the new device", to_new.as_mut_slice()))
            .map_err(|_| ClientError::Mls("cannot derive the link's keys".into()))?;
        Ok(Channel { to_linking, to_new })
    }
}

impl Channel {
    /// The key of what the linking device seals for the new one, for the new device to keep
    /// while the history comes.
    pub(crate) fn to_new_key(&self) -> &[u8] {
        self.to_new.as_slice()
    }

    /// The new device's side of a channel it kept: it opens what comes to it; what it would
    /// seal for the linking device nobody can open (a random key).
    pub(crate) fn for_new_device(to_new: &[u8]) -> ClientResult<Self> {
        let key: [u8; 32] =
            to_new.try_into().map_err(|_| ClientError::Protocol("a kept link key".into()))?;
        let mut unused = Zeroizing::new([0u8; 32]);
        getrandom::fill(unused.as_mut_slice())
            .map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
        Ok(Channel { to_linking: unused, to_new: Zeroizing::new(key) })
    }

    fn cipher(&self, direction: Direction) -> ChaCha20Poly1305 {
        let key = match direction {
            Direction::ToLinking => &self.to_linking,
            Direction::ToNew => &self.to_new,
        };
        ChaCha20Poly1305::new(Key::from_slice(key.as_slice()))
    }

    /// `plaintext` sealed for the other side: a random nonce, then the ciphertext.
    pub(crate) fn seal(&self, what: What, plaintext: &[u8]) -> ClientResult<Vec<u8>> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| ClientError::Mls(format!("no randomness: {e}")))?;
        let sealed = self
            .cipher(what.direction())
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: what.label() })
            .map_err(|_| ClientError::Mls("cannot seal a link message".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Opens what the other side sealed; `None` if it was not sealed with this channel's key
    /// (another password was used) or was changed on the way.
    pub(crate) fn open(&self, what: What, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < 12 {
            return None;
        }
        let (nonce, body) = sealed.split_at(12);
        self.cipher(what.direction())
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: what.label() })
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_reads_back_as_shown_whatever_the_case_and_lookalikes() {
        let code = LinkCode::new("7K3M9QXD2H", "http://127.0.0.1:8080").unwrap();
        let shown = code.show();
        let again = LinkCode::parse(shown.expose()).unwrap();
        assert_eq!(
            (again.id.as_str(), again.server.as_str()),
            ("7K3M9QXD2H", "http://127.0.0.1:8080")
        );
        assert_eq!(again.password.expose(), code.password.expose());
        let typed = shown.expose().to_lowercase().replace('0', "o").replace('-', " ");
        assert_eq!(LinkCode::parse(&typed).unwrap().password.expose(), code.password.expose());
        for bad in [
            "",
            "7K3M9-QXD2H",
            "7K3M9-QXD2H-FPW8R-TA5CN",
            "7K3M9-QXD2H-FPW8R-TA5CU@x",
            "7K3M9-QXD2H-FPW8R-TA5C@x",
            "7K3M9-QXD2H-FPW8R-TA5CN@ ",
        ] {
            let e = LinkCode::parse(bad).unwrap_err();
            assert_eq!(e.refusal(), Some(Refusal::BadLinkCode), "{bad:?}: {e}");
        }
    }

    #[test]
    fn only_the_same_password_opens_the_channel() {
        let code = LinkCode::new("7K3M9QXD2H", "x").unwrap();
        let (a, a_msg) = code.start();
        let (b, b_msg) = LinkCode::parse(code.show().expose()).unwrap().start();
        let (a, b) = (a.finish(&b_msg).unwrap(), b.finish(&a_msg).unwrap());
        let sealed = b.seal(What::Request, b"my key").unwrap();
        assert_eq!(a.open(What::Request, &sealed).unwrap().as_slice(), b"my key");
        // The other direction's key does not open it, nor another kind's label, nor a changed
        // byte.
        assert!(a.open(What::Handover, &sealed).is_none());
        assert!(a.open(What::KeyPackages, &sealed).is_none());
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(a.open(What::Request, &changed).is_none());
        // A mistyped password: the exchange completes, but nothing opens.
        let mut wrong = LinkCode::parse(code.show().expose()).unwrap();
        wrong.password = Secret::new("0000000000".into());
        let (c, c_msg) = wrong.start();
        let (a2, a2_msg) = code.start();
        let (a2, c) = (a2.finish(&c_msg).unwrap(), c.finish(&a2_msg).unwrap());
        let sealed = c.seal(What::Request, b"my key").unwrap();
        assert!(a2.open(What::Request, &sealed).is_none());
    }
}
