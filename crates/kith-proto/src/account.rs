//! An account's key and the certificates it signs for its devices (see DESIGN.md, "Accounts,
//! devices and linking"). Each account has an Ed25519 **account key**, made on its first
//! device; it signs a [`DeviceCertificate`] for each device: the username, the device's id, its
//! MLS signature key and when it was added. The certificate travels with the device's
//! KeyPackages and leaf (an MLS extension, [`DEVICE_CERTIFICATE_EXTENSION`]), and a device
//! whose certificate does not verify under its account's key is refused by the server and by
//! every client. Safety numbers and key transparency are about the account key, so adding a
//! device changes neither.
//!
//! The encoding is total: [`DeviceCertificate::decode`] consumes every byte or refuses.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The MLS extension type that carries a device's certificate in its KeyPackages and leaf
/// nodes (private-use range, beside the group's own extension).
pub const DEVICE_CERTIFICATE_EXTENSION: u16 = 0xff0b;

/// Domain separation: a certificate's signature can be nothing else the account key signs.
const CONTEXT: &[u8] = b"kith device certificate v1";

/// Longest username a certificate holds (the rules allow 32).
const MAX_USERNAME: usize = 32;

/// Why a certificate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("the device certificate does not decode")]
    Malformed,
    #[error("the account key is not an Ed25519 public key")]
    BadAccountKey,
    #[error("the device certificate is not signed by the account's key")]
    BadSignature,
    #[error("the device certificate is for another account")]
    OtherAccount,
    #[error("the device certificate is for another device")]
    OtherDevice,
    #[error("the device certificate names another signature key")]
    OtherKey,
    #[error("the device carries no certificate from its account's key")]
    Missing,
    #[error("the device carries a certificate, but its account has no account key")]
    NoAccountKey,
}

/// What the account key vouches for: one device of the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    pub username: String,
    pub device_id: u64,
    /// The device's MLS signature key (its credential key), Ed25519, 32 bytes.
    pub signature_key: Vec<u8>,
    /// When the account added it, Unix milliseconds.
    pub added_at: u64,
    /// The account key's signature over the fields above.
    pub signature: Vec<u8>,
}

impl DeviceCertificate {
    /// The account key's certificate for a device.
    pub fn sign(
        account_key: &SigningKey,
        username: &str,
        device_id: u64,
        signature_key: &[u8],
        added_at: u64,
    ) -> Self {
        let signed = signed_bytes(username, device_id, signature_key, added_at);
        DeviceCertificate {
            username: username.to_string(),
            device_id,
            signature_key: signature_key.to_vec(),
            added_at,
            signature: account_key.sign(&signed).to_bytes().to_vec(),
        }
    }

    /// Checks the signature under `account_key` (32 bytes), strictly (no malleable forms).
    pub fn verify(&self, account_key: &[u8]) -> Result<(), CertificateError> {
        let key: [u8; 32] = account_key.try_into().map_err(|_| CertificateError::BadAccountKey)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| CertificateError::BadAccountKey)?;
        let sig: [u8; 64] =
            self.signature.as_slice().try_into().map_err(|_| CertificateError::Malformed)?;
        let signed =
            signed_bytes(&self.username, self.device_id, &self.signature_key, self.added_at);
        key.verify_strict(&signed, &Signature::from_bytes(&sig))
            .map_err(|_| CertificateError::BadSignature)
    }

    /// Checks that this certifies exactly `device` of `username`, with `signature_key`, under
    /// `account_key`: what the server and clients ask of a leaf or a KeyPackage.
    pub fn verify_for(
        &self,
        account_key: &[u8],
        username: &str,
        device: Option<u64>,
        signature_key: &[u8],
    ) -> Result<(), CertificateError> {
        self.verify(account_key)?;
        if self.username != username {
            return Err(CertificateError::OtherAccount);
        }
        if device.is_some_and(|d| d != self.device_id) {
            return Err(CertificateError::OtherDevice);
        }
        if self.signature_key != signature_key {
            return Err(CertificateError::OtherKey);
        }
        Ok(())
    }

    /// The bytes that travel in the MLS extension.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.username.len() + 8 + 1 + 32 + 8 + 64);
        put(&mut out, self.username.as_bytes());
        out.extend_from_slice(&self.device_id.to_be_bytes());
        put(&mut out, &self.signature_key);
        out.extend_from_slice(&self.added_at.to_be_bytes());
        put(&mut out, &self.signature);
        out
    }

    /// Reads [`DeviceCertificate::encode`]'s bytes, all of them, or refuses.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertificateError> {
        let mut r = Reader(bytes);
        let username = r.field(MAX_USERNAME)?;
        let username =
            String::from_utf8(username.to_vec()).map_err(|_| CertificateError::Malformed)?;
        let device_id = r.u64()?;
        let signature_key = r.field(32)?.to_vec();
        let added_at = r.u64()?;
        let signature = r.field(64)?.to_vec();
        if !r.0.is_empty() || signature_key.len() != 32 || signature.len() != 64 {
            return Err(CertificateError::Malformed);
        }
        Ok(DeviceCertificate { username, device_id, signature_key, added_at, signature })
    }
}

/// Domain separation for a link's approval.
const APPROVAL: &[u8] = b"kith link approval v1";

/// What the account key signs to approve a new device through a link: the link, the account,
/// the new device's credential key and the hash of its token. The server makes the device only
/// with this signature, so it cannot add a device to an account on its own.
pub fn approval_bytes(
    link_id: &str,
    username: &str,
    credential_key: &[u8],
    token_hash: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(APPROVAL.len() + 4 + link_id.len() + username.len() + 64);
    put(&mut out, APPROVAL);
    put(&mut out, link_id.as_bytes());
    put(&mut out, username.as_bytes());
    put(&mut out, credential_key);
    put(&mut out, token_hash);
    out
}

/// Signs an approval (see [`approval_bytes`]).
pub fn sign_approval(account_key: &SigningKey, approval: &[u8]) -> Vec<u8> {
    account_key.sign(approval).to_bytes().to_vec()
}

/// Whether `signature` is the account key's over `approval`, strictly.
pub fn verify_approval(account_key: &[u8], approval: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(account_key) else { return false };
    let Ok(sig) = <[u8; 64]>::try_from(signature) else { return false };
    VerifyingKey::from_bytes(&key)
        .is_ok_and(|k| k.verify_strict(approval, &Signature::from_bytes(&sig)).is_ok())
}

/// Whether `key` can be an account key's public half: 32 bytes of a valid Ed25519 point, not
/// one of small order (a key anyone could "sign" for).
pub fn is_account_key(key: &[u8]) -> bool {
    <[u8; 32]>::try_from(key)
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .is_some_and(|k| !k.is_weak())
}

/// The public half of an account key, as it travels (32 bytes).
pub fn public_key(account_key: &SigningKey) -> Vec<u8> {
    account_key.verifying_key().to_bytes().to_vec()
}

fn signed_bytes(username: &str, device_id: u64, signature_key: &[u8], added_at: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTEXT.len() + 1 + username.len() + 8 + 1 + 32 + 8);
    put(&mut out, CONTEXT);
    put(&mut out, username.as_bytes());
    out.extend_from_slice(&device_id.to_be_bytes());
    put(&mut out, signature_key);
    out.extend_from_slice(&added_at.to_be_bytes());
    out
}

/// A field with its one-byte length before it (every field here is under 256 bytes).
fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.push(u8::try_from(field.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&field[..field.len().min(255)]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn field(&mut self, max: usize) -> Result<&'a [u8], CertificateError> {
        let (&len, rest) = self.0.split_first().ok_or(CertificateError::Malformed)?;
        let len = usize::from(len);
        if len > max || rest.len() < len {
            return Err(CertificateError::Malformed);
        }
        let (field, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(field)
    }

    fn u64(&mut self) -> Result<u64, CertificateError> {
        let (n, rest) = self.0.split_first_chunk::<8>().ok_or(CertificateError::Malformed)?;
        self.0 = rest;
        Ok(u64::from_be_bytes(*n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_certificate_verifies_under_its_account_key_only() {
        let account = key(1);
        let device_key = key(2).verifying_key().to_bytes();
        let cert = DeviceCertificate::sign(&account, "ana", 7, &device_key, 1_700_000_000_000);
        let public = public_key(&account);
        assert_eq!(cert.verify_for(&public, "ana", Some(7), &device_key), Ok(()));
        assert_eq!(cert.verify_for(&public, "ana", None, &device_key), Ok(()));
        assert_eq!(cert.verify(&public_key(&key(3))), Err(CertificateError::BadSignature));
        assert_eq!(
            cert.verify_for(&public, "bob", Some(7), &device_key),
            Err(CertificateError::OtherAccount)
        );
        assert_eq!(
            cert.verify_for(&public, "ana", Some(8), &device_key),
            Err(CertificateError::OtherDevice)
        );
        assert_eq!(
            cert.verify_for(&public, "ana", Some(7), &[9; 32]),
            Err(CertificateError::OtherKey)
        );
        assert_eq!(cert.verify(&[0; 5]), Err(CertificateError::BadAccountKey));
        assert!(is_account_key(&public));
        assert!(!is_account_key(&public[..31]));
        // The identity point has small order: anything would verify under it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(!is_account_key(&identity));
    }

    #[test]
    fn every_field_is_signed() {
        let account = key(1);
        let public = public_key(&account);
        let cert = DeviceCertificate::sign(&account, "ana", 7, &[2; 32], 5);
        let mut forged = [cert.clone(), cert.clone(), cert.clone(), cert.clone()];
        forged[0].username = "anb".into();
        forged[1].device_id = 8;
        forged[2].signature_key = vec![3; 32];
        forged[3].added_at = 6;
        for f in forged {
            assert_eq!(f.verify(&public), Err(CertificateError::BadSignature), "{f:?}");
        }
    }

    #[test]
    fn decoding_is_total() {
        let cert = DeviceCertificate::sign(&key(1), "ana", 7, &[2; 32], 5);
        let bytes = cert.encode();
        assert_eq!(DeviceCertificate::decode(&bytes), Ok(cert));
        for cut in 0..bytes.len() {
            assert!(DeviceCertificate::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(DeviceCertificate::decode(&longer), Err(CertificateError::Malformed));
        assert!(DeviceCertificate::decode(&[]).is_err());
        assert!(DeviceCertificate::decode(&[200; 300]).is_err());
    }
}
