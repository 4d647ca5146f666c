//! Maps keyed by ids the kernel hands out (cgroup ids, process ids, and keys made of them),
//! hashed with FxHash's multiply-and-rotate instead of the standard library's SipHash. SipHash
//! defends against keys chosen to collide; nobody chooses these (the kernel numbers cgroups and
//! processes itself), and with 1,000 cgroups and processes counted, SipHash was a twentieth of
//! the agent's CPU.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

/// A map keyed by kernel ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A set of kernel ids.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// FxHash (the Rust compiler's hasher) over whole words.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    fn write_u16(&mut self, n: u16) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    /// The product's high bits are its best mixed, its low bits depend on the input's low bits
    /// only (ids that are multiples of 4096 would share a bucket): folded together, the low bits
    /// (where a table's bucket is taken from) are as spread as the high ones.
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn runs_of_ids_spread_over_buckets_as_random_ones_would() {
        // Cgroup ids and pids come in runs, or spaced out: the hashes' low bits (a table's
        // bucket) must not. 1,024 random keys in 1,024 buckets fill about 647 of them.
        let build = BuildHasherDefault::<IdHasher>::default();
        let buckets = |ids: &mut dyn Iterator<Item = u64>| {
            ids.map(|id| build.hash_one(id) & 1023)
                .collect::<HashSet<_>>()
                .len()
        };
        for (what, used) in [
            ("a run", buckets(&mut (4096..4096 + 1024))),
            (
                "multiples of 4096",
                buckets(&mut (1..=1024).map(|i| i * 4096)),
            ),
            ("pids in a run", buckets(&mut (300..300 + 1024))),
        ] {
            assert!(used > 600, "{what}: {used} of 1024 buckets used");
        }
    }

    #[test]
    fn a_map_of_ids_works_as_a_map() {
        let mut m: IdMap<u64, u32> = IdMap::default();
        for i in 0..10_000u64 {
            m.insert(i * 4096, i as u32);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u64).all(|i| m[&(i * 4096)] == i as u32));
        assert_eq!(m.get(&1), None);
    }
}
