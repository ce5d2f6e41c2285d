//! The figures of an evaluation.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CaseResult, Outcome};

/// Accuracy within one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    /// Cases in the category.
    pub cases: usize,
    /// Cases scored correct.
    pub correct: usize,
    /// `correct / cases`.
    pub accuracy: f64,
}

/// The summary of an evaluation: what [`Report`] prints, and [`Report::to_json`] writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The model, as the recorded calls name it (the first case's).
    pub model: Option<String>,
    /// Cases run.
    pub cases: usize,
    /// Cases scored correct.
    pub correct: usize,
    /// `correct / cases` (0 without cases).
    pub accuracy: f64,
    /// Accuracy per category.
    pub categories: BTreeMap<String, CategoryScore>,
    /// The share of cases whose output is valid ([`CaseResult::schema_valid`]).
    pub schema_valid_rate: f64,
    /// Cases whose turn failed.
    pub errors: usize,
    /// Of those, the turns cut off by the token limit.
    pub cut_off: usize,
    /// Of the cases answered without a call (abstained), the share where no call was expected; `None` when
    /// none abstained.
    pub abstention_precision: Option<f64>,
    /// Of the cases where no call was expected, the share answered without a call; `None` without such cases.
    pub abstention_recall: Option<f64>,
    /// Median latency of a case, in milliseconds.
    pub latency_p50_ms: f64,
    /// 95th percentile latency of a case (nearest rank), in milliseconds.
    pub latency_p95_ms: f64,
    /// Mean latency of a case, in milliseconds.
    pub latency_mean_ms: f64,
    /// Prompt tokens, all cases.
    pub prompt_tokens: usize,
    /// Generated tokens, all cases.
    pub completion_tokens: usize,
    /// Wall time of the whole evaluation, in seconds.
    pub wall_s: f64,
}

/// The results of an evaluation: per case, and the summary.
///
/// `Display` prints the summary as a table; [`to_json`](Self::to_json) gives it as one JSON line;
/// [`write_jsonl`](Self::write_jsonl) writes the per-case results.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per case, in the order of the cases.
    pub results: Vec<CaseResult>,
    /// The figures.
    pub summary: Summary,
}

/// A threshold on a per-case figure that separates the cases where no call is right from those that need
/// one, from [`Report::best_relevance_threshold`] or [`Report::best_call_threshold`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The threshold: cases below it would abstain.
    pub value: f64,
    /// Of the cases where no call is right, the share below it (would abstain).
    pub abstains: f64,
    /// Of the cases that need a call, the share at or above it (would still call).
    pub keeps: f64,
}

impl Report {
    /// The relevance threshold ([`ModelSpecialistBuilder::relevance_threshold`](crate::specialist::ModelSpecialistBuilder::relevance_threshold))
    /// that best separates this run's cases, where no call is right from where one is needed: the one with
    /// the most of both right, losing at most `max_lost` (a share, 0 to 1) of the cases that need a call.
    /// `None` unless the run has cases of both kinds with a relevance.
    pub fn best_relevance_threshold(&self, max_lost: f64) -> Option<Threshold> {
        best_threshold(&self.results, max_lost, |r| r.relevance)
    }

    /// As [`best_relevance_threshold`](Self::best_relevance_threshold), for the call threshold
    /// ([`ModelSpecialistBuilder::call_threshold`](crate::specialist::ModelSpecialistBuilder::call_threshold)),
    /// from each case's [`CaseResult::call_probability`].
    pub fn best_call_threshold(&self, max_lost: f64) -> Option<Threshold> {
        best_threshold(&self.results, max_lost, |r| r.call_probability)
    }
}

fn best_threshold(
    results: &[CaseResult],
    max_lost: f64,
    figure: impl Fn(&CaseResult) -> Option<f64>,
) -> Option<Threshold> {
    let (mut none, mut some) = (Vec::new(), Vec::new());
    for r in results {
        if let Some(f) = figure(r) {
            if r.expects_no_call() {
                none.push(f);
            } else if matches!(r.expected, super::Expected::Calls(_)) {
                some.push(f);
            }
        }
    }
    if none.is_empty() || some.is_empty() {
        return None;
    }
    let mut candidates: Vec<f64> = none.iter().chain(&some).copied().collect();
    candidates.push(0.0);
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    candidates
        .into_iter()
        .map(|value| Threshold {
            value,
            abstains: none.iter().filter(|f| **f < value).count() as f64 / none.len() as f64,
            keeps: some.iter().filter(|f| **f >= value).count() as f64 / some.len() as f64,
        })
        .filter(|t| 1.0 - t.keeps <= max_lost + 1e-9)
        .max_by(|a, b| (a.abstains + a.keeps).total_cmp(&(b.abstains + b.keeps)))
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report {
    /// The report of these results (for example read back from a JSON Lines file); `wall` is the evaluation's
    /// wall time.
    pub fn new(results: Vec<CaseResult>, wall: Duration) -> Self {
        let cases = results.len();
        let correct = results.iter().filter(|r| r.verdict.correct).count();
        let mut categories: BTreeMap<String, CategoryScore> = BTreeMap::new();
        for r in &results {
            let c =
                categories.entry(r.category.clone()).or_insert(CategoryScore { cases: 0, correct: 0, accuracy: 0.0 });
            c.cases += 1;
            c.correct += usize::from(r.verdict.correct);
        }
        for c in categories.values_mut() {
            c.accuracy = ratio(c.correct, c.cases);
        }
        let errors = results.iter().filter(|r| matches!(r.outcome, Outcome::Error { .. })).count();
        let cut_off = results.iter().filter(|r| matches!(r.outcome, Outcome::Error { cut_off: true, .. })).count();
        let abstained = results.iter().filter(|r| r.outcome.is_answer()).count();
        let no_call = results.iter().filter(|r| r.expects_no_call()).count();
        let both = results.iter().filter(|r| r.outcome.is_answer() && r.expects_no_call()).count();
        let mut latencies: Vec<f64> = results.iter().map(|r| r.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let summary = Summary {
            model: results.iter().find_map(|r| r.model.clone()),
            cases,
            correct,
            accuracy: ratio(correct, cases),
            categories,
            schema_valid_rate: ratio(results.iter().filter(|r| r.schema_valid).count(), cases),
            errors,
            cut_off,
            abstention_precision: (abstained > 0).then(|| ratio(both, abstained)),
            abstention_recall: (no_call > 0).then(|| ratio(both, no_call)),
            latency_p50_ms: percentile(&latencies, 0.5),
            latency_p95_ms: percentile(&latencies, 0.95),
            latency_mean_ms: if cases == 0 { 0.0 } else { latencies.iter().sum::<f64>() / cases as f64 },
            prompt_tokens: results.iter().map(|r| r.prompt_tokens).sum(),
            completion_tokens: results.iter().map(|r| r.completion_tokens).sum(),
            wall_s: wall.as_secs_f64(),
        };
        Self { results, summary }
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.summary).unwrap_or_default()
    }

    /// Writes the per-case results as JSON Lines, one [`CaseResult`] a line (the file is replaced).
    ///
    /// # Errors
    /// The I/O error if the file cannot be written.
    pub fn write_jsonl(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for r in &self.results {
            serde_json::to_writer(&mut out, r)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn maybe_percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), percent)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.summary;
        let width = s.categories.keys().map(String::len).max().unwrap_or(0).max("category".len());
        writeln!(f, "{:<width$}  {:>6}  {:>7}  {:>8}", "category", "cases", "correct", "accuracy")?;
        for (name, c) in &s.categories {
            let name = if name.is_empty() { "-" } else { name };
            writeln!(f, "{:<width$}  {:>6}  {:>7}  {:>8}", name, c.cases, c.correct, percent(c.accuracy))?;
        }
        writeln!(f, "{:<width$}  {:>6}  {:>7}  {:>8}", "all", s.cases, s.correct, percent(s.accuracy))?;
        writeln!(f)?;
        if let Some(model) = &s.model {
            writeln!(f, "model                 {model}")?;
        }
        writeln!(f, "schema-valid          {}", percent(s.schema_valid_rate))?;
        writeln!(f, "errors                {} ({} cut off)", s.errors, s.cut_off)?;
        writeln!(
            f,
            "abstention            precision {}, recall {}",
            maybe_percent(s.abstention_precision),
            maybe_percent(s.abstention_recall)
        )?;
        writeln!(
            f,
            "latency per case      p50 {:.0} ms, p95 {:.0} ms, mean {:.0} ms",
            s.latency_p50_ms, s.latency_p95_ms, s.latency_mean_ms
        )?;
        let per_case = |n: usize| if s.cases == 0 { 0.0 } else { n as f64 / s.cases as f64 };
        writeln!(
            f,
            "tokens                {} prompt ({:.1} per case), {} generated ({:.1} per case)",
            s.prompt_tokens,
            per_case(s.prompt_tokens),
            s.completion_tokens,
            per_case(s.completion_tokens)
        )?;
        write!(f, "wall time             {:.2} s", s.wall_s)
    }
}
