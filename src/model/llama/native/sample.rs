//! Token sampling on raw logits, with an optional llguidance constraint.
//!
//! Sampling is done in Rust rather than through llama.cpp's sampler chain so that a constraint costs almost
//! nothing: the token is sampled from the unconstrained logits first and checked against the grammar; only when
//! the grammar rejects it is the full token mask computed and the token sampled again from the allowed set (the
//! same order as llama.cpp's `common_sampler_sample` with `grammar_first = false`).

use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

use crate::model::Sampling;

/// SplitMix64: small, fast, and good enough for sampling; seeded per request for reproducibility.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The shortest span of repeats [`loop_token`] acts on, in tokens.
const LOOP_SPAN: usize = 16;
/// The longest cycle [`loop_token`] looks for, in tokens.
const LOOP_PERIOD: usize = 16;

/// If the generated tokens end in a short cycle repeated at least three times (over at least
/// [`LOOP_SPAN`] tokens), the token that would start the cycle once more: the caller rules it out, so that a
/// small model stuck in a loop (`"Apex_Apex_Apex_..."`, the same sentence again and again) goes on
/// differently, which under a grammar usually means closing the string.
pub(crate) fn loop_token(history: &[u32]) -> Option<u32> {
    let n = history.len();
    for period in 1..=LOOP_PERIOD.min(n / 3) {
        let repeats = LOOP_SPAN.div_ceil(period).max(3);
        let span = repeats * period;
        if span > n {
            continue;
        }
        let tail = &history[n - span..];
        if tail.iter().enumerate().all(|(i, t)| *t == tail[i % period]) {
            return Some(tail[0]);
        }
    }
    None
}

/// Why a constrained sample failed.
#[derive(Debug)]
pub(crate) struct ConstraintFailure(pub(crate) String);

/// Picks the next token from `logits`.
pub(crate) fn sample(
    logits: &[f32],
    sampling: &Sampling,
    rng: &mut Rng,
    matcher: Option<&mut Matcher>,
    scratch: &mut Vec<(u32, f32)>,
) -> Result<u32, ConstraintFailure> {
    let first = pick(logits, sampling, rng, None, scratch);
    let Some(matcher) = matcher else {
        return Ok(first);
    };
    match matcher.validate_tokens(&[first]) {
        Ok(1) => return Ok(first),
        Ok(_) => {}
        Err(e) => return Err(ConstraintFailure(e.to_string())),
    }
    let mask = matcher.compute_mask_or_eos().map_err(|e| ConstraintFailure(e.to_string()))?;
    if mask.is_zero() {
        return Err(ConstraintFailure("the grammar allows no token here".into()));
    }
    Ok(pick(logits, sampling, rng, Some(&mask), scratch))
}

/// A sampled token, its log-probability, and the five most likely tokens with theirs.
pub(crate) type Scored = (u32, f32, Vec<(u32, f32)>);

/// Like [`sample`], and also returns the token's log-probability and the five most likely tokens with theirs,
/// over the tokens the constraint allows (the mask is computed at every step, so this costs more).
pub(crate) fn sample_scored(
    logits: &[f32],
    sampling: &Sampling,
    rng: &mut Rng,
    matcher: Option<&mut Matcher>,
    scratch: &mut Vec<(u32, f32)>,
) -> Result<Scored, ConstraintFailure> {
    let mask = match matcher {
        Some(m) => {
            let mask = m.compute_mask_or_eos().map_err(|e| ConstraintFailure(e.to_string()))?;
            if mask.is_zero() {
                return Err(ConstraintFailure("the grammar allows no token here".into()));
            }
            Some(mask)
        }
        None => None,
    };
    let token = pick(logits, sampling, rng, mask.as_ref(), scratch);
    let allowed_logits = || logits.iter().enumerate().filter(|&(i, l)| l.is_finite() && allowed(mask.as_ref(), i));
    let max = allowed_logits().map(|(_, &l)| l).fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = allowed_logits().map(|(_, &l)| f64::from(l - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    let logprob = |l: f32| (f64::from(l) - lse) as f32;
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(6);
    for (i, &l) in allowed_logits() {
        if top.len() < 5 || l > top[top.len() - 1].1 {
            let at = top.partition_point(|&(_, x)| x >= l);
            top.insert(at, (i as u32, l));
            top.truncate(5);
        }
    }
    let chosen = logits.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
    Ok((token, logprob(chosen), top.into_iter().map(|(t, l)| (t, logprob(l))).collect()))
}

fn allowed(mask: Option<&SimpleVob>, token: usize) -> bool {
    // Tokens past the mask's length (some vocabularies are padded) are never allowed under a mask.
    mask.is_none_or(|m| token < m.len() && m.is_allowed(token as u32))
}

fn pick(
    logits: &[f32],
    sampling: &Sampling,
    rng: &mut Rng,
    mask: Option<&SimpleVob>,
    scratch: &mut Vec<(u32, f32)>,
) -> u32 {
    if sampling.is_greedy() {
        return argmax(logits, mask);
    }
    scratch.clear();
    scratch.extend(
        logits.iter().enumerate().filter(|&(i, l)| l.is_finite() && allowed(mask, i)).map(|(i, &l)| (i as u32, l)),
    );
    if scratch.is_empty() {
        return argmax(logits, mask);
    }
    let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
    let k = sampling.top_k as usize;
    if k > 0 && k < scratch.len() {
        scratch.select_nth_unstable_by(k - 1, by_logit_desc);
        scratch.truncate(k);
    }
    scratch.sort_unstable_by(by_logit_desc);
    // Softmax at temperature, then nucleus cut.
    let max = scratch[0].1;
    let t = sampling.temperature.max(1e-6);
    let mut total = 0.0f64;
    for (_, l) in scratch.iter_mut() {
        let p = (f64::from(*l - max) / f64::from(t)).exp();
        *l = p as f32;
        total += p;
    }
    let mut keep = scratch.len();
    if sampling.top_p < 1.0 {
        let mut acc = 0.0f64;
        for (i, (_, p)) in scratch.iter().enumerate() {
            acc += f64::from(*p) / total;
            if acc >= f64::from(sampling.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = scratch[..keep].iter().map(|(_, p)| f64::from(*p)).sum();
    let mut target = rng.next_f64() * kept_total;
    for (tok, p) in &scratch[..keep] {
        target -= f64::from(*p);
        if target <= 0.0 {
            return *tok;
        }
    }
    scratch[keep - 1].0
}

fn argmax(logits: &[f32], mask: Option<&SimpleVob>) -> u32 {
    let mut best = 0usize;
    let mut best_logit = f32::NEG_INFINITY;
    match mask {
        None => {
            for (i, &l) in logits.iter().enumerate() {
                if l > best_logit {
                    best_logit = l;
                    best = i;
                }
            }
        }
        Some(mask) => {
            let mut found = false;
            mask.iter_set_entries(|i| {
                if let Some(&l) = logits.get(i) {
                    if !found || l > best_logit {
                        best_logit = l;
                        best = i;
                        found = true;
                    }
                }
            });
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_seen_and_its_next_token_named() {
        // "ab" eight times over: the next token would be `a` again.
        let looping: Vec<u32> = std::iter::repeat_n([7, 8], 8).flatten().collect();
        assert_eq!(loop_token(&looping), Some(7));
        assert_eq!(loop_token(&looping[1..]), None, "seven and a half times is not yet a loop");
        let same: Vec<u32> = vec![5; 16];
        assert_eq!(loop_token(&same), Some(5));
        // A six-token sentence three times (18 tokens).
        let sentence: Vec<u32> = [1, 2, 3, 4, 5, 6].repeat(3);
        assert_eq!(loop_token(&sentence), Some(1));
        // Not yet a loop: too short, or not repeating.
        assert_eq!(loop_token(&[7, 8, 7, 8, 7, 8]), None);
        assert_eq!(loop_token(&(0..40).collect::<Vec<u32>>()), None);
        assert_eq!(loop_token(&[]), None);
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let logits = [0.1, 3.0, -1.0, 2.9];
        let mut rng = Rng::new(0);
        let t = sample(&logits, &Sampling::greedy(), &mut rng, None, &mut Vec::new()).unwrap();
        assert_eq!(t, 1);
    }

    #[test]
    fn greedy_under_a_mask_picks_the_best_allowed() {
        let logits = [0.1, 3.0, -1.0, 2.9];
        let mut mask = SimpleVob::alloc(4);
        mask.allow_token(0);
        mask.allow_token(3);
        assert_eq!(argmax(&logits, Some(&mask)), 3);
    }

    #[test]
    fn same_seed_same_samples() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let s = Sampling::temperature(1.0).with_seed(7);
        let run = || {
            let mut rng = Rng::new(s.seed);
            (0..20).map(|_| sample(&logits, &s, &mut rng, None, &mut Vec::new()).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let distinct: std::collections::HashSet<_> = run().into_iter().collect();
        assert!(distinct.len() > 1, "temperature sampling should vary");
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.1, 3.0, -1.0, 2.9];
        let s = Sampling::temperature(5.0).with_top_k(1);
        let mut rng = Rng::new(3);
        for _ in 0..10 {
            assert_eq!(sample(&logits, &s, &mut rng, None, &mut Vec::new()).unwrap(), 1);
        }
    }
}
