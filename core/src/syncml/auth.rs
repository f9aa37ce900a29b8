//! SyncML DM credentials (`Cred`) and challenges (`Chal`): Basic and MD5.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::{check, invalid, raw_meta, req_text, write_metinf, R};
use crate::error::DecodeError;
use crate::xml::{join, Element, XmlWriter};

/// An authentication scheme carried in `Meta/Type` of a `Cred` or `Chal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthScheme {
    /// `syncml:auth-basic`: `B64(name:secret)`.
    Basic,
    /// `syncml:auth-md5`: `B64(MD5(B64(MD5(name:secret)):nonce))`.
    Md5,
}

impl AuthScheme {
    /// The `Meta/Type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Basic => "syncml:auth-basic",
            AuthScheme::Md5 => "syncml:auth-md5",
        }
    }

    fn from_type(s: &str) -> Option<AuthScheme> {
        [AuthScheme::Basic, AuthScheme::Md5]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// `Cred`: credentials, always `Meta/Format` `b64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cred {
    /// The scheme (`Meta/Type`).
    pub scheme: AuthScheme,
    /// `Data`: the base64 text.
    pub data: String,
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    parts.iter().for_each(|p| h.update(p));
    h.finalize().into()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Cred {
    /// Basic credentials: `B64(name:secret)`.
    pub fn basic(name: &str, secret: &str) -> Cred {
        Cred {
            scheme: AuthScheme::Basic,
            data: B64.encode(format!("{name}:{secret}")),
        }
    }

    /// MD5 credentials for `nonce` (the raw bytes, as decoded from `NextNonce`):
    /// `B64(MD5(B64(MD5(name:secret)):nonce))`.
    pub fn md5(name: &str, secret: &str, nonce: &[u8]) -> Cred {
        let inner = B64.encode(md5(&[name.as_bytes(), b":", secret.as_bytes()]));
        Cred {
            scheme: AuthScheme::Md5,
            data: B64.encode(md5(&[inner.as_bytes(), b":", nonce])),
        }
    }

    /// For Basic credentials, the name and secret they carry (split at the first `:`).
    pub fn basic_parts(&self) -> Option<(String, String)> {
        if self.scheme != AuthScheme::Basic {
            return None;
        }
        let text = String::from_utf8(B64.decode(&self.data).ok()?).ok()?;
        let (name, secret) = text.split_once(':')?;
        Some((name.to_string(), secret.to_string()))
    }

    /// Whether these credentials are `name`'s with `secret`; `nonce` is the one last
    /// challenged with (ignored for Basic). The name of MD5 credentials travels in
    /// `SyncHdr/Source/LocName`.
    pub fn verify(&self, name: &str, secret: &str, nonce: &[u8]) -> bool {
        let expected = match self.scheme {
            AuthScheme::Basic => Cred::basic(name, secret),
            AuthScheme::Md5 => Cred::md5(name, secret, nonce),
        };
        same(expected.data.as_bytes(), self.data.as_bytes())
    }
}

/// `Chal`: a challenge naming the scheme to use and, for MD5, the next nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chal {
    /// The scheme required (`Meta/Type`).
    pub scheme: AuthScheme,
    /// `Meta/NextNonce`, raw bytes (base64 on the wire).
    pub next_nonce: Option<Vec<u8>>,
}

impl Chal {
    /// A Basic challenge (no nonce).
    pub fn basic() -> Chal {
        Chal {
            scheme: AuthScheme::Basic,
            next_nonce: None,
        }
    }

    /// An MD5 challenge with the nonce the next credentials must use.
    pub fn md5(next_nonce: Vec<u8>) -> Chal {
        Chal {
            scheme: AuthScheme::Md5,
            next_nonce: Some(next_nonce),
        }
    }
}

pub(super) fn write_cred(w: &mut XmlWriter, c: &Cred) {
    w.open("Cred");
    w.open("Meta");
    write_metinf(w, "Format", "b64");
    write_metinf(w, "Type", c.scheme.as_str());
    w.close();
    w.leaf("Data", &c.data);
    w.close();
}

pub(super) fn write_chal(w: &mut XmlWriter, c: &Chal) {
    w.open("Chal");
    w.open("Meta");
    write_metinf(w, "Format", "b64");
    write_metinf(w, "Type", c.scheme.as_str());
    if let Some(n) = &c.next_nonce {
        write_metinf(w, "NextNonce", &B64.encode(n));
    }
    w.close();
    w.close();
}

/// The scheme of a `Cred` or `Chal` `Meta`: `Type` required, `Format` `b64` if present.
fn scheme(format: Option<&str>, type_: Option<&str>, meta: &str) -> R<AuthScheme> {
    if let Some(f) = format.filter(|f| *f != "b64") {
        return Err(invalid(join(meta, "Format"), format!("`{f}` is not b64")));
    }
    let t = type_.ok_or_else(|| DecodeError::MissingField {
        field: join(meta, "Type"),
    })?;
    AuthScheme::from_type(t)
        .ok_or_else(|| invalid(join(meta, "Type"), format!("unsupported scheme `{t}`")))
}

pub(super) fn cred_from(el: &Element, here: &str) -> R<Cred> {
    check(el, here, &["Meta", "Data"], &[])?;
    let mp = join(here, "Meta");
    let m = el.required_child("Meta", here)?;
    let m = raw_meta(&m, &mp, &["Format", "Type"])?;
    let scheme = scheme(m.format.as_deref(), m.type_.as_deref(), &mp)?;
    let data = req_text(el, "Data", here)?;
    if B64.decode(data).is_err() {
        return Err(invalid(join(here, "Data"), "not base64"));
    }
    Ok(Cred {
        scheme,
        data: data.to_string(),
    })
}

pub(super) fn chal_from(el: &Element, here: &str) -> R<Chal> {
    check(el, here, &["Meta"], &[])?;
    let mp = join(here, "Meta");
    let m = raw_meta(
        &el.required_child("Meta", here)?,
        &mp,
        &["Format", "Type", "NextNonce"],
    )?;
    let scheme = scheme(m.format.as_deref(), m.type_.as_deref(), &mp)?;
    let next_nonce = m
        .next_nonce
        .map(|n| {
            B64.decode(&n)
                .map_err(|_| invalid(join(&mp, "NextNonce"), "not base64"))
        })
        .transpose()?;
    Ok(Chal { scheme, next_nonce })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_matches_the_known_vector() {
        let c = Cred::basic("Aladdin", "open sesame");
        assert_eq!(c.data, "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(
            c.basic_parts(),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert!(c.verify("Aladdin", "open sesame", b""));
        assert!(!c.verify("Aladdin", "open sesame!", b""));
    }

    #[test]
    fn md5_matches_step_by_step_and_known_vector() {
        // Computed independently: B64(MD5("Bruce:OhBehave")), then MD5 of that ":" nonce.
        let step1 = Md5::digest(b"Bruce:OhBehave");
        let step2 = B64.encode(step1);
        assert_eq!(step2, "l+IXAO0Dma2iaBljrgteTA==");
        let mut input = step2.into_bytes();
        input.extend_from_slice(b":Nonce");
        let step3 = B64.encode(Md5::digest(&input));
        let c = Cred::md5("Bruce", "OhBehave", b"Nonce");
        assert_eq!(c.data, step3);
        assert_eq!(c.data, "K7B/g6MQmfusJTUdpLLI3Q==");
        assert!(c.verify("Bruce", "OhBehave", b"Nonce"));
        assert!(!c.verify("Bruce", "OhBehave", b"Other"));
        assert!(!c.verify("Bruce2", "OhBehave", b"Nonce"));
        assert_eq!(c.basic_parts(), None);
    }
}
