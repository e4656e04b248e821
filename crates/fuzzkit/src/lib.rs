//! A small mutation fuzzer for parsers, usable from ordinary `#[test]`s on the stable
//! toolchain (cargo-fuzz/libFuzzer need nightly, which the build machines do not have).
//!
//! It starts from seed inputs and applies random byte-level mutations (bit flips, inserted,
//! deleted, duplicated and overwritten bytes, splices of two inputs, "interesting" tokens),
//! calling the target with each. A panic fails the test and prints the input (hex) that
//! caused it; that input then belongs in the target's regression seeds.
//!
//! `FUZZ_ITERS` sets the iterations per target (default 3000: seconds in CI); the long run
//! documented in RELIABILITY.md uses `FUZZ_ITERS=3000000`. `FUZZ_SEED` fixes the RNG.
#![warn(missing_docs)]

use std::panic::{AssertUnwindSafe, catch_unwind};

/// xorshift64*: fast, good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\"",
    b"\\",
    b"'",
    b"{",
    b"}",
    b"[",
    b"]",
    b"=",
    b":",
    b",",
    b"\n",
    b"%",
    b"%ID%",
    b"..",
    b"/",
    b"://",
    b"?",
    b"&",
    b"null",
    b"true",
    b"-1",
    b"4294967296",
    b"18446744073709551616",
    b"1e999",
    b"\xf0\x9f\x92\xa9",
    b"[[",
    b"]]",
    b"\"\"\"",
    b"0x",
    b"_",
];

/// One random mutation of `input`, using `other` for splices.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next_u64() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                v.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            4 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                v.splice(at..at, t.iter().copied());
            }
            5 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => v.truncate(rng.below(len)),
            7 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0u8, 0x7f, 0x80, 0xff, b'9'][rng.below(5)];
            }
            _ => v.push(rng.next_u64() as u8),
        }
    }
    v
}

/// Iterations per target.
pub fn iterations() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// Runs `target` on the seeds and on `iterations()` mutations of them. Panics (failing the
/// test) with the offending input if the target panics.
pub fn fuzz(name: &str, seeds: &[&[u8]], mut target: impl FnMut(&[u8])) {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng::new(seed ^ name.len() as u64);
    let mut corpus: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut run = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            panic!(
                "fuzz target {name} panicked on input (hex) {}\n(as text: {:?})",
                input.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                String::from_utf8_lossy(input)
            );
        }
    };
    for s in corpus.clone() {
        run(&s);
    }
    for i in 0..iterations() {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let input = mutate(&mut rng, &corpus[a], &corpus[b]);
        run(&input);
        // Keep some mutants as new starting points (a crude way to go deeper).
        if i % 64 == 0 && corpus.len() < 256 {
            corpus.push(input);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_in_bounds_and_vary() {
        let mut rng = Rng::new(1);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..1000 {
            distinct.insert(mutate(&mut rng, b"seed input", b"other"));
        }
        assert!(distinct.len() > 500);
        let _ = mutate(&mut rng, b"", b"");
    }

    #[test]
    #[should_panic(expected = "fuzz target boom panicked")]
    fn reports_a_panicking_input() {
        fuzz("boom", &[b"abc"], |i| {
            assert!(!i.contains(&b'!'), "found it")
        });
    }
}
