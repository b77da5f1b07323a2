//! Shared by the fuzz harnesses of every crate (`crates/*/tests/fuzz.rs` include it by path):
//! a proptest strategy of byte strings near a valid seed (bytes overwritten, a cut, an insertion,
//! a length field blown up) or anywhere (random bytes), and the number of cases to run
//! (`GANTRY_FUZZ_CASES`, default 64 in the test suite; `scripts/fuzz.sh` runs many more).

use proptest::prelude::*;

pub fn cases() -> u32 {
    std::env::var("GANTRY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Byte strings derived from `seed`, or random ones.
pub fn near(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    let edited = (
        prop::collection::vec((0..len, any::<u8>()), 0..8),
        prop::option::of(0..=len),
        prop::option::of((0..=len, prop::collection::vec(any::<u8>(), 1..64))),
        prop::option::of((0..len, prop::sample::select(vec![0u8, 0x7f, 0x80, 0xff]))),
    )
        .prop_map(move |(edits, cut, insert, big)| {
            let mut b = seed.clone();
            for (i, v) in edits {
                if i < b.len() {
                    b[i] = v;
                }
            }
            // Length fields are where parsers trust their input: make runs of one byte huge.
            if let Some((at, v)) = big {
                for j in at..(at + 4).min(b.len()) {
                    b[j] = v;
                }
            }
            if let Some((at, bytes)) = insert {
                let at = at.min(b.len());
                b.splice(at..at, bytes);
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            b
        });
    prop_oneof![
        4 => edited,
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}
