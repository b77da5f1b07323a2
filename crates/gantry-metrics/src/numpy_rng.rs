//! NumPy's legacy `np.random.RandomState`, as far as torch-fidelity and stylegan2-ada use it:
//! `permutation(n)` (Inception Score shuffle), `choice(n, k, replace=False)` (KID subsets) and
//! `randn(n)` (the latent of a seed in stylegan2-ada's `generate.py`: the legacy polar
//! Box-Muller over 53-bit doubles, which caches its second value).
//!
//! This is bit-identical to NumPy, not merely "the same kind of RNG": MT19937 seeded with
//! `init_genrand(seed)` (what `RandomState(int)` does), the legacy Fisher-Yates shuffle that
//! walks `i = n-1 .. 1` drawing `j` by masked rejection sampling (`random_interval`), and
//! `choice` without replacement defined as the first `k` items of a full permutation. Tests
//! compare the indices against NumPy itself. The only inputs where it could diverge are
//! populations above 2^32 (NumPy then draws 64-bit words; implemented, but never tested).

/// MT19937 state in NumPy's legacy seeding.
pub struct NumpyRandomState {
    mt: [u32; 624],
    idx: usize,
    /// The second value of the last Box-Muller pair (`has_gauss` / `gauss`).
    gauss: Option<f64>,
}

impl NumpyRandomState {
    /// `np.random.RandomState(seed)`.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState {
            mt,
            idx: 624,
            gauss: None,
        }
    }

    fn refill(&mut self) {
        for k in 0..624 {
            let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.mt[k] = self.mt[(k + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.idx = 0;
    }

    /// MT19937 `genrand_int32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            self.refill();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        (hi << 32) | self.next_u32() as u64
    }

    /// NumPy's `random_interval(max)`: uniform on `0..=max` by masked rejection.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        loop {
            let v = if max <= u32::MAX as u64 {
                (self.next_u32() as u64) & mask
            } else {
                self.next_u64() & mask
            };
            if v <= max {
                return v;
            }
        }
    }

    /// `legacy_double`: 53 random bits in [0, 1).
    fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// `legacy_gauss`: one standard normal value.
    pub fn standard_normal(&mut self) -> f64 {
        if let Some(g) = self.gauss.take() {
            return g;
        }
        loop {
            let x1 = 2.0 * self.next_f64() - 1.0;
            let x2 = 2.0 * self.next_f64() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.gauss = Some(f * x1);
                return f * x2;
            }
        }
    }

    /// `rng.randn(n)`.
    pub fn randn(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.standard_normal()).collect()
    }

    /// `rng.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut a: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            a.swap(i, j);
        }
        a
    }

    /// `rng.choice(n, k, replace=False)`; `None` when `k > n` (NumPy raises).
    pub fn choice_without_replacement(&mut self, n: usize, k: usize) -> Option<Vec<i64>> {
        if k > n {
            return None;
        }
        let mut p = self.permutation(n);
        p.truncate(k);
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_mt19937_outputs() {
        // First outputs of init_genrand(5489), the reference implementation's default seed.
        let mut r = NumpyRandomState::new(5489);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, [3_499_211_612, 581_869_302, 3_890_346_734]);
    }

    /// `np.random.RandomState(s).randn(5)` printed by NumPy 2.4 (`repr` of each value).
    #[test]
    fn randn_is_numpys() {
        let want: [(u32, [f64; 5]); 2] = [
            (
                0,
                [
                    1.764052345967664,
                    0.4001572083672233,
                    0.9787379841057392,
                    2.240893199201458,
                    1.8675579901499675,
                ],
            ),
            (
                42,
                [
                    0.4967141530112327,
                    -0.13826430117118466,
                    0.6476885381006925,
                    1.5230298564080254,
                    -0.23415337472333597,
                ],
            ),
        ];
        for (seed, values) in want {
            assert_eq!(NumpyRandomState::new(seed).randn(5), values, "seed {seed}");
        }
    }

    #[test]
    fn permutation_is_a_permutation_and_choice_its_prefix() {
        let p = NumpyRandomState::new(2020).permutation(100);
        let mut s = p.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<i64>>());
        let c = NumpyRandomState::new(2020)
            .choice_without_replacement(100, 10)
            .unwrap();
        assert_eq!(c, p[..10]);
        assert!(NumpyRandomState::new(1)
            .choice_without_replacement(3, 4)
            .is_none());
        assert!(NumpyRandomState::new(1).permutation(0).is_empty());
    }
}
