//! A small seeded random generator for the generated-input tests (hostile specs, hostile
//! requests): the seed is printed, and `ROSTER_<NAME>_SEED` repeats a run. Shrinking against
//! a live server would be slow; a printed seed is enough to repeat a failure.

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    /// `ROSTER_<name>_SEED` if set, else a fresh random seed; printed with `what`.
    pub fn seeded(name: &str, what: &str) -> (Self, u64) {
        let var = format!("ROSTER_{name}_SEED");
        let seed = std::env::var(&var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            u64::from_le_bytes(roster::credentials::random_bytes::<8>().unwrap_or_default())
        }) | 1;
        println!("{what}: seed {seed} ({var} repeats this run)");
        (Self(seed), seed)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        usize::try_from(value % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// One of `choices` (which must not be empty).
    pub fn pick<'a, T>(&mut self, choices: &'a [T]) -> &'a T {
        &choices[self.below(choices.len())]
    }

    /// Whether a 1-in-`n` chance came up.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}
