//! Public resource ids: 8 base62 characters, like `V4pe5NT2`.
//!
//! An id is either drawn at random or, where one process owns the
//! database, taken in time order ([`PublicId::from_number`] of
//! [`ordered_floor`] onwards): rows inserted together then sit side by side
//! in every index keyed by id, so a batch of inserts touches a few B-tree
//! pages instead of one page per row.

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

    /// The id that spells `n` in base62, most significant digit first;
    /// `None` from 62^8 on. Digits sort in ASCII order, so ids compare as
    /// their numbers do.
    pub fn from_number(mut n: u64) -> Option<Self> {
        if n >= ID_SPACE {
            return None;
        }
        let mut out = [0u8; ID_LEN];
        for b in out.iter_mut().rev() {
            *b = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        Some(PublicId(out))
    }

    /// The number the id spells (the inverse of [`PublicId::from_number`]).
    pub fn number(&self) -> u64 {
        self.0.iter().fold(0, |n, &b| {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'A'..=b'Z' => b - b'A' + 10,
                _ => b - b'a' + 36,
            };
            n * 62 + u64::from(digit)
        })
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

/// How many ids there are: 62^8.
pub const ID_SPACE: u64 = 62u64.pow(ID_LEN as u32);

/// Ordered ids available per second: the last three digits.
pub const ORDERED_PER_SECOND: u64 = 62 * 62 * 62;

/// The second ordered ids count from: 2025-01-01T00:00:00Z. The first five
/// digits count seconds from there, which lasts until 2054; after that
/// [`PublicId::from_number`] answers `None` and ids are drawn at random.
pub const ORDERED_EPOCH_SECS: u64 = 1_735_689_600;

/// The first ordered id number of the second `unix_secs` (0 before the
/// epoch).
pub fn ordered_floor(unix_secs: u64) -> u64 {
    unix_secs.saturating_sub(ORDERED_EPOCH_SECS) * ORDERED_PER_SECOND
}

/// The Unix second an ordered id number belongs to.
pub fn ordered_second(n: u64) -> u64 {
    n / ORDERED_PER_SECOND + ORDERED_EPOCH_SECS
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

    #[test]
    fn ordered_ids_of_one_second_share_their_first_five_digits() {
        let second = ORDERED_EPOCH_SECS + 60 * 60 * 24 * 700;
        let first = PublicId::from_number(ordered_floor(second)).expect("in range");
        let last = PublicId::from_number(ordered_floor(second + 1) - 1).expect("in range");
        assert_eq!(first.as_str()[..5], last.as_str()[..5]);
        assert_eq!(&first.as_str()[5..], "000");
        assert_eq!(&last.as_str()[5..], "zzz");
        assert_eq!(ordered_second(first.number()), second);
        assert!(PublicId::from_number(ID_SPACE).is_none());
        assert_eq!(
            PublicId::from_number(ID_SPACE - 1)
                .expect("in range")
                .as_str(),
            "zzzzzzzz"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = PublicId::parse(&s);
        }

        #[test]
        fn numbers_round_trip_and_keep_their_order(a in 0..ID_SPACE, b in 0..ID_SPACE) {
            let x = PublicId::from_number(a).expect("in range");
            let y = PublicId::from_number(b).expect("in range");
            prop_assert_eq!(x.number(), a);
            prop_assert_eq!(PublicId::parse(x.as_str()), Some(x));
            // Text order (what an index on the id column sorts by) is number order.
            prop_assert_eq!(x.as_str().cmp(y.as_str()), a.cmp(&b));
        }
    }
}
