//! Package 0: the server-initiated session notification
//! (`application/vnd.syncml.notification`), usually sent by WAP Push or SMS.
//!
//! ```text
//! digest (128 bits) | version (10) | ui-mode (2) | initiator (1) | future use (27, zero)
//!                   | session id (16) | server-id length (8) | server id | vendor (rest)
//! ```
//! All fields are big-endian. The digest is
//! `H(B64(H(server-id:password)):nonce:B64(H(trigger)))` with H = MD5, the server's
//! SRVCRED secret and nonce, and trigger = every byte after the digest.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::DecodeError;

/// Media type of a Package 0 notification.
pub const NOTIFICATION_MEDIA_TYPE: &str = "application/vnd.syncml.notification";
/// The version field for DM 1.2 (`1.2` written as 12).
pub const NOTIFICATION_VERSION: u16 = 12;

/// Bytes before the server id: digest, 40 header bits, session id, server-id length.
const FIXED: usize = 16 + 5 + 2 + 1;

/// A decoded Package 0 notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Version, 10 bits: [`NOTIFICATION_VERSION`].
    pub version: u16,
    /// UI mode, 2 bits: 0 not specified, 1 background, 2 informative, 3 user interaction.
    pub ui_mode: u8,
    /// Initiator, 1 bit: 0 client, 1 server.
    pub initiator: u8,
    /// Session id, 16 bits: the `SessionID` the device uses in the session.
    pub session_id: u16,
    /// The server's ServerID (at most 255 bytes of UTF-8).
    pub server_id: String,
    /// The vendor-specific trigger body after the server id (usually empty).
    pub vendor: Vec<u8>,
}

fn b64_md5(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    parts.iter().for_each(|p| h.update(p));
    B64.encode(h.finalize())
}

impl Notification {
    /// A server-initiated DM 1.2 notification, UI mode "not specified", no vendor part.
    pub fn new(session_id: u16, server_id: impl Into<String>) -> Self {
        Self {
            version: NOTIFICATION_VERSION,
            ui_mode: 0,
            initiator: 1,
            session_id,
            server_id: server_id.into(),
            vendor: Vec::new(),
        }
    }

    /// Checks every field fits its width; the error names the first that does not.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.version > 0x3FF {
            return Err(invalid("Notification/Version", "wider than 10 bits"));
        }
        if self.ui_mode > 3 {
            return Err(invalid("Notification/UIMode", "wider than 2 bits"));
        }
        if self.initiator > 1 {
            return Err(invalid("Notification/Initiator", "must be 0 or 1"));
        }
        if self.server_id.len() > 255 {
            return Err(invalid("Notification/ServerID", "longer than 255 bytes"));
        }
        Ok(())
    }

    /// The trigger: every byte after the digest. Fields wider than their width are
    /// truncated to it (the server id to its first 255 bytes): call
    /// [`Notification::validate`] first for values built by hand.
    pub fn trigger(&self) -> Vec<u8> {
        let bits = (u64::from(self.version & 0x3FF) << 30)
            | (u64::from(self.ui_mode & 3) << 28)
            | (u64::from(self.initiator & 1) << 27);
        let id = &self.server_id.as_bytes()[..self.server_id.len().min(255)];
        let mut out = Vec::with_capacity(FIXED - 16 + id.len() + self.vendor.len());
        out.extend_from_slice(&bits.to_be_bytes()[3..]);
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.vendor);
        out
    }

    /// The digest of `trigger` sent by `server_id` with `server_password` and `nonce`.
    pub fn digest(
        server_id: &str,
        server_password: &str,
        nonce: &[u8],
        trigger: &[u8],
    ) -> [u8; 16] {
        let server = b64_md5(&[server_id.as_bytes(), b":", server_password.as_bytes()]);
        let trigger = b64_md5(&[trigger]);
        let mut h = Md5::new();
        for part in [server.as_bytes(), b":", nonce, b":", trigger.as_bytes()] {
            h.update(part);
        }
        h.finalize().into()
    }

    /// The complete notification: digest, then trigger (see [`Notification::trigger`]).
    pub fn encode(&self, server_password: &str, nonce: &[u8]) -> Vec<u8> {
        let trigger = self.trigger();
        let mut out = Self::digest(&self.server_id, server_password, nonce, &trigger).to_vec();
        out.extend_from_slice(&trigger);
        out
    }

    /// Decodes a notification and returns it with the digest it carries (not checked:
    /// see [`Notification::verify_digest`]). Only version 12 is accepted, and the future
    /// use bits must be zero.
    pub fn decode(bytes: &[u8]) -> Result<(Notification, [u8; 16]), DecodeError> {
        if bytes.len() < FIXED {
            return Err(invalid(
                "Notification",
                format!(
                    "{} bytes, shorter than the {FIXED}-byte minimum",
                    bytes.len()
                ),
            ));
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&bytes[..16]);
        let h = &bytes[16..];
        let version = (u16::from(h[0]) << 2) | u16::from(h[1] >> 6);
        if version != NOTIFICATION_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: format!("{}.{}", version / 10, version % 10),
            });
        }
        if h[1] & 0x07 != 0 || h[2..5] != [0, 0, 0] {
            return Err(invalid("Notification/FutureUse", "must be zero"));
        }
        let len = usize::from(h[7]);
        let id = bytes.get(FIXED..FIXED + len).ok_or_else(|| {
            invalid(
                "Notification/ServerID",
                format!("{len} bytes declared, {} present", bytes.len() - FIXED),
            )
        })?;
        let server_id = std::str::from_utf8(id)
            .map_err(|_| invalid("Notification/ServerID", "not UTF-8"))?
            .to_string();
        let n = Notification {
            version,
            ui_mode: (h[1] >> 4) & 3,
            initiator: (h[1] >> 3) & 1,
            session_id: u16::from_be_bytes([h[5], h[6]]),
            server_id,
            vendor: bytes[FIXED + len..].to_vec(),
        };
        Ok((n, digest))
    }

    /// Whether `bytes` is a well-formed notification whose digest is right for
    /// `server_password` and `nonce` (the device's SRVCRED secret and nonce for the
    /// server id it names).
    pub fn verify_digest(bytes: &[u8], server_password: &str, nonce: &[u8]) -> bool {
        match Self::decode(bytes) {
            Ok((n, digest)) => {
                let want = Self::digest(&n.server_id, server_password, nonce, &bytes[16..]);
                want.iter().zip(digest).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bits_by_hand() {
        let n = Notification {
            ui_mode: 2,
            ..Notification::new(0x1234, "srv")
        };
        // version 12 = 0b00_0000_1100 | ui 0b10 | initiator 1 | 27 zero bits.
        // 00000011 | 00 10 1 000 | 0x00 0x00 0x00 | 0x12 0x34 | 3 | "srv"
        assert_eq!(
            n.trigger(),
            [0x03, 0x28, 0, 0, 0, 0x12, 0x34, 3, b's', b'r', b'v']
        );
        let bytes = n.encode("pw", b"nonce");
        assert_eq!(bytes.len(), 16 + 11);
        let (back, digest) = Notification::decode(&bytes).unwrap();
        assert_eq!(back, n);
        assert_eq!(digest[..], bytes[..16]);
    }

    #[test]
    fn digest_step_by_step() {
        let trigger = Notification::new(7, "S").trigger();
        let server = B64.encode(Md5::digest(b"S:secret"));
        let t = B64.encode(Md5::digest(&trigger));
        let mut input = server.into_bytes();
        input.extend_from_slice(b":N:");
        input.extend_from_slice(t.as_bytes());
        let want: [u8; 16] = Md5::digest(&input).into();
        assert_eq!(Notification::digest("S", "secret", b"N", &trigger), want);
        let bytes = Notification::new(7, "S").encode("secret", b"N");
        assert_eq!(bytes[..16], want);
        assert!(Notification::verify_digest(&bytes, "secret", b"N"));
        assert!(!Notification::verify_digest(&bytes, "secret", b"M"));
    }

    #[test]
    fn refuses_bad_layouts() {
        let good = Notification::new(1, "srv").encode("p", b"n");
        assert!(Notification::decode(&good[..20]).is_err());
        assert!(Notification::decode(&good[..good.len() - 1]).is_err());
        let mut future = good.clone();
        future[20] = 1;
        assert_eq!(
            Notification::decode(&future),
            Err(invalid("Notification/FutureUse", "must be zero"))
        );
        let mut v13 = good;
        v13[17] |= 0x40;
        assert_eq!(
            Notification::decode(&v13),
            Err(DecodeError::UnsupportedVersion {
                found: "1.3".into()
            })
        );
        assert!(Notification {
            ui_mode: 4,
            ..Notification::new(1, "s")
        }
        .validate()
        .is_err());
    }
}
