//! Public resource ids: 8 random base62 characters, like `V4pe5NT2`.

use std::fmt;

use rand::Rng;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of every public id.
pub const ID_LEN: usize = 8;

/// A validated public id. Every resource is addressed by one of these; the
/// type guarantees that anything reaching the store has the right shape.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicId([u8; ID_LEN]);

impl PublicId {
    /// Draws a fresh random id (62^8 ≈ 2.2e14 possibilities).
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut out = [0u8; ID_LEN];
        for b in &mut out {
            *b = ALPHABET[rng.random_range(0..ALPHABET.len())];
        }
        PublicId(out)
    }

    /// Parses an id from a path segment or body field; `None` if it does not
    /// have the public-id shape (such an id cannot exist, so callers answer 404).
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != ID_LEN || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut out = [0u8; ID_LEN];
        out.copy_from_slice(bytes);
        Some(PublicId(out))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicId({})", self.as_str())
    }
}

impl serde::Serialize for PublicId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Random secret made of `len` base62 characters (API tokens, integration keys).
pub fn random_secret<R: Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Random lower-case hex string of `len` characters (generated incident keys).
pub fn random_hex<R: Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..len)
        .map(|_| HEX[rng.random_range(0..16)] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_parse_back() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let id = PublicId::generate(&mut rng);
            assert_eq!(PublicId::parse(id.as_str()), Some(id));
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in ["", "abc", "V4pe5NT2x", "V4pe5NT-", "V4pe5NTé", "../etc/p"] {
            assert_eq!(PublicId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_have_requested_shape() {
        let mut rng = rand::rng();
        let hex = random_hex(&mut rng, 32);
        assert_eq!(hex.len(), 32);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(random_secret(&mut rng, 40)
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = PublicId::parse(&s);
        }
    }
}
