//! Digests of guest memory: how a trace records a large LOCK2 result
//! without its bytes (format version 2, docs/trace.md).
//!
//! A digest covers whole 4 KiB pages: each page is hashed with XXH3-128,
//! and the digest is the XXH3-128 of those page hashes, 16 bytes each
//! (little endian), in address order. Hashing per page lets the recorder
//! keep one 16-byte hash per page as its knowledge of what a page holds
//! (instead of a 4 KiB copy), and still make the run's digest in the same
//! pass over the bytes.
//!
//! XXH3 rather than BLAKE3: it runs at several times BLAKE3's speed on one
//! core (the digest is on the LOCK2 reply's path, and the machines this
//! runs on have two), and a trace needs to catch a replay that computes
//! something else, not a forger: a guest that crafts colliding pages only
//! fools the check of its own trace.

use twox_hash::XxHash3_128;

/// Bytes per hashed page.
pub const PAGE: usize = 4096;

/// The hash of one page.
pub fn page_hash(page: &[u8]) -> u128 {
    XxHash3_128::oneshot(page)
}

/// The hash of a page of zeros (what a replay's fresh memory holds).
pub fn zero_page_hash() -> u128 {
    static ZERO: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    *ZERO.get_or_init(|| page_hash(&[0u8; PAGE]))
}

/// Combines page hashes, in address order, into a digest.
#[derive(Default)]
pub struct Combiner {
    hashes: Vec<u8>,
}

impl Combiner {
    pub fn push(&mut self, page: u128) {
        self.hashes.extend_from_slice(&page.to_le_bytes());
    }

    /// Pages pushed so far.
    pub fn pages(&self) -> usize {
        self.hashes.len() / 16
    }

    /// The digest of the pages pushed so far; starts over.
    pub fn finish(&mut self) -> u128 {
        let d = XxHash3_128::oneshot(&self.hashes);
        self.hashes.clear();
        d
    }
}

/// The digest of `bytes` (a whole number of pages).
pub fn digest(bytes: &[u8]) -> u128 {
    let mut c = Combiner::default();
    for page in bytes.chunks(PAGE) {
        c.push(page_hash(page));
    }
    c.finish()
}

/// A digest as 32 hex digits (most significant first).
pub fn hex(d: u128) -> String {
    format!("{d:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_128;

    #[test]
    fn a_digest_is_the_hash_of_its_page_hashes() {
        let mut bytes = vec![0u8; 3 * PAGE];
        bytes[PAGE + 5] = 1;
        let mut want = Vec::new();
        for p in bytes.chunks(PAGE) {
            want.extend_from_slice(&xxh3_128(p).to_le_bytes());
        }
        assert_eq!(digest(&bytes), xxh3_128(&want));
        assert_eq!(zero_page_hash(), xxh3_128(&[0u8; PAGE]));
        // Any byte counts, and so does the order of the pages.
        let mut other = bytes.clone();
        other[2 * PAGE + 4095] ^= 0x80;
        assert_ne!(digest(&bytes), digest(&other));
        let swapped: Vec<u8> =
            [&bytes[PAGE..2 * PAGE], &bytes[..PAGE], &bytes[2 * PAGE..]].concat();
        assert_ne!(digest(&bytes), digest(&swapped));
        assert_eq!(hex(1).len(), 32);
    }

    /// The hash is XXH3-128 (seed 0) as another implementation computes
    /// it, for the lengths a trace hashes (a page; 16 bytes per page) and
    /// the lengths where XXH3 changes its method.
    #[test]
    fn the_page_hash_is_xxh3_128() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..70_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        for len in [
            0,
            1,
            3,
            16,
            17,
            128,
            129,
            240,
            241,
            1024,
            PAGE,
            16 * 4096,
            70_000,
        ] {
            let b = &bytes[..len];
            assert_eq!(page_hash(b), xxh3_128(b), "{len} bytes");
        }
        let mut c = Combiner::default();
        c.push(page_hash(&bytes[..PAGE]));
        c.push(page_hash(&bytes[PAGE..2 * PAGE]));
        assert_eq!(c.finish(), digest(&bytes[..2 * PAGE]));
    }
}
