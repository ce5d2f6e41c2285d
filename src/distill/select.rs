//! S4: candidate small models replayed on each cluster's held-out calls.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{answer_text, is_held_out, Clustering, Curated, CuratedCall};
use crate::eval::{Case, Evaluation, Expected, ExpectedCall, Outcome};
use crate::ledger::{CostModel, Price};
use crate::model::{LanguageModel, Message, Role, Usage};

/// A small model to try on the clusters.
#[derive(Clone)]
pub struct Candidate {
    /// Its name in the tables (a file name, with its adapter if any).
    pub name: String,
    /// The model.
    pub model: Arc<dyn LanguageModel>,
    /// The memory it takes, if measured (bytes).
    pub memory_bytes: Option<u64>,
    /// What a call costs on it.
    pub price: Price,
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate").field("name", &self.name).field("memory_bytes", &self.memory_bytes).finish()
    }
}

impl Candidate {
    /// A candidate named by its model, with no memory figure, at no cost.
    pub fn new(model: Arc<dyn LanguageModel>) -> Self {
        Self { name: model.name().to_owned(), model, memory_bytes: None, price: Price::Free }
    }
}

/// How [`select`] replays calls. Start from [`SelectOptions::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SelectOptions {
    /// The held-out share of each cluster's runs ([`is_held_out`]; default 0.2, as [`export`](super::export)).
    pub held_out: f64,
    /// At most this many held-out calls replayed per cluster (default 20).
    pub max_cases: usize,
    /// Calls replayed at a time (default 2).
    pub concurrency: usize,
    /// For answers in words: the word overlap (F1, from 0 to 1) at which a candidate's answer agrees with the
    /// logged one (default 0.5).
    pub text_agreement: f64,
    /// The prices of the logged models (for their cost per call).
    pub costs: CostModel,
}

impl Default for SelectOptions {
    fn default() -> Self {
        Self { held_out: 0.2, max_cases: 20, concurrency: 2, text_agreement: 0.5, costs: CostModel::new() }
    }
}

impl SelectOptions {
    /// Sets the prices of the logged models.
    pub fn costs(mut self, costs: CostModel) -> Self {
        self.costs = costs;
        self
    }

    /// Sets the most calls replayed per cluster.
    pub fn max_cases(mut self, cases: usize) -> Self {
        self.max_cases = cases;
        self
    }
}

/// How one candidate did on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The candidate's name.
    pub model: String,
    /// The share of replayed calls it agreed on with the logged model: the same tool and arguments for
    /// calls, an answer in words whose words overlap the logged answer's enough.
    pub accuracy: f64,
    /// Calls replayed.
    pub cases: usize,
    /// Calls it agreed on.
    pub agreed: usize,
    /// Replayed calls that failed (an error, not a wrong answer).
    pub errors: usize,
    /// The share of its outputs that were valid against their schema.
    pub schema_valid_rate: f64,
    /// Its mean latency per call, in milliseconds.
    pub latency_mean_ms: f64,
    /// Its memory, if measured.
    pub memory_bytes: Option<u64>,
    /// Its mean cost per call.
    pub cost_per_call: f64,
}

/// One cluster's table: the logged model against each candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSelection {
    /// The cluster.
    pub cluster: usize,
    /// Its label.
    pub label: String,
    /// Whether it is open-ended work (answers in words).
    pub open_ended: bool,
    /// Held-out calls replayed.
    pub cases: usize,
    /// The model(s) that served these calls in the ledger.
    pub logged_model: String,
    /// Their mean latency, in milliseconds.
    pub logged_latency_ms: f64,
    /// Their mean cost per call.
    pub logged_cost_per_call: f64,
    /// Each candidate, in the order given.
    pub candidates: Vec<CandidateScore>,
    /// The cheapest candidate at or above `min_accuracy`, if any (see [`Selection::choose`]).
    pub chosen: Option<String>,
}

/// The result of [`select`]: a table per cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// One table per cluster with held-out calls, in cluster order.
    pub clusters: Vec<ClusterSelection>,
}

impl Selection {
    /// Marks, in each cluster, the candidate to take it over: the one with the lowest cost per call (then
    /// latency) among those at or above `min_accuracy`; none when no candidate is good enough.
    pub fn choose(&mut self, min_accuracy: f64) {
        for c in &mut self.clusters {
            c.chosen = c
                .candidates
                .iter()
                .filter(|s| s.cases > 0 && s.accuracy >= min_accuracy)
                .min_by(|a, b| {
                    a.cost_per_call.total_cmp(&b.cost_per_call).then(a.latency_mean_ms.total_cmp(&b.latency_mean_ms))
                })
                .map(|s| s.model.clone());
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.clusters {
            writeln!(f, "cluster {} ({} held-out calls): {}", c.cluster, c.cases, c.label)?;
            writeln!(
                f,
                "  {:<34} {:>8} {:>10} {:>9} {:>12}",
                "model", "accuracy", "latency ms", "memory MB", "cost/call"
            )?;
            writeln!(
                f,
                "  {:<34} {:>8} {:>10.0} {:>9} {:>12.6}",
                format!("{} (logged)", c.logged_model),
                "-",
                c.logged_latency_ms,
                "-",
                c.logged_cost_per_call
            )?;
            for s in &c.candidates {
                let memory = s.memory_bytes.map_or("-".to_owned(), |b| format!("{:.0}", b as f64 / 1048576.0));
                let chosen = if c.chosen.as_deref() == Some(s.model.as_str()) { "  <- takes it" } else { "" };
                writeln!(
                    f,
                    "  {:<34} {:>7.0}% {:>10.0} {:>9} {:>12.6}{chosen}",
                    s.model,
                    s.accuracy * 100.0,
                    s.latency_mean_ms,
                    memory,
                    s.cost_per_call
                )?;
            }
        }
        Ok(())
    }
}

/// The evaluation case of a curated call: its request (earlier user and assistant turns as context), its
/// tools, and what the logged model did as what is right: its calls, each argument with its one logged
/// value; or, for an answer in words, no call (the words are compared by [`select`]). `None` for a call that
/// followed a tool's result (replaying it needs the tool's result, not the request).
pub fn case_of(call: &CuratedCall) -> Option<Case> {
    if call.messages.iter().any(|m| m.role == Role::Tool) {
        return None;
    }
    let messages: Vec<Message> = call.messages.iter().filter(|m| m.role != Role::System).cloned().collect();
    messages.iter().any(|m| m.role == Role::User).then_some(())?;
    let expected = if call.tool_calls.is_empty() {
        Expected::NoCall
    } else {
        Expected::Calls(call.tool_calls.iter().map(ExpectedCall::exactly).collect())
    };
    Some(Case {
        id: format!("{}#{}", call.run, call.seq),
        category: String::new(),
        messages,
        tools: call.tools.clone(),
        expected,
    })
}

/// Word overlap of two texts: the F1 of their bags of lower-cased words, from 0 to 1.
pub fn text_similarity(a: &str, b: &str) -> f64 {
    let words = |t: &str| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for w in super::words(t) {
            *m.entry(w).or_insert(0) += 1;
        }
        m
    };
    let (wa, wb) = (words(a), words(b));
    let (na, nb): (usize, usize) = (wa.values().sum(), wb.values().sum());
    if na == 0 || nb == 0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    let common: usize = wa.iter().map(|(w, n)| (*n).min(*wb.get(w).unwrap_or(&0))).sum();
    if common == 0 {
        return 0.0;
    }
    let (p, r) = (common as f64 / na as f64, common as f64 / nb as f64);
    2.0 * p * r / (p + r)
}

/// Step S4 of the conversion loop: for each cluster, replays up to `max_cases` of its held-out first turns
/// ([`case_of`]) on each candidate through the [evaluation module](crate::eval) (the default specialist with
/// the call's tools), and scores agreement with the logged model. `progress` is called after each replayed
/// call with the number done and the total.
pub async fn select(
    curated: &Curated,
    clustering: &Clustering,
    candidates: &[Candidate],
    options: &SelectOptions,
    progress: Option<Arc<dyn Fn(usize, usize) + Send + Sync>>,
) -> Selection {
    let mut per_cluster: Vec<(usize, Vec<(Case, &CuratedCall)>)> = Vec::new();
    for cluster in &clustering.clusters {
        let cases: Vec<(Case, &CuratedCall)> = clustering
            .calls_of(curated, cluster.id)
            .filter(|c| is_held_out(c, options.held_out))
            .filter_map(|c| case_of(c).map(|case| (case, c)))
            .take(options.max_cases)
            .collect();
        per_cluster.push((cluster.id, cases));
    }
    let total: usize = per_cluster.iter().map(|(_, c)| c.len()).sum::<usize>() * candidates.len();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clusters = Vec::new();
    for (id, cases) in per_cluster {
        let cluster = &clustering.clusters[id];
        let n = cases.len().max(1) as f64;
        let mut logged_models: Vec<String> = cases.iter().map(|(_, c)| c.model.clone()).collect();
        logged_models.sort();
        logged_models.dedup();
        let logged_latency_ms = cases.iter().map(|(_, c)| c.latency_ms).sum::<f64>() / n;
        let logged_cost_per_call = cases
            .iter()
            .map(|(_, c)| {
                let usage = c.usage.unwrap_or_default();
                options.costs.price_of(&c.model).cost(&usage, Duration::from_secs_f64(c.latency_ms / 1000.0))
            })
            .sum::<f64>()
            / n;
        let mut scores = Vec::new();
        for candidate in candidates {
            let mut evaluation = Evaluation::new(cases.iter().map(|(case, _)| case.clone()).collect());
            if let Some(progress) = progress.clone() {
                let done = done.clone();
                evaluation = evaluation.on_progress(move |_, _, _| {
                    let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress(d, total);
                });
            }
            let report = evaluation.run(candidate.model.clone(), options.concurrency).await;
            let mut agreed = 0;
            let mut cost = 0.0;
            for (result, (_, call)) in report.results.iter().zip(&cases) {
                let ok = match (&result.expected, &result.outcome) {
                    (Expected::NoCall, Outcome::Answer(value)) => {
                        let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                        text_similarity(&text, &answer_text(&call.output)) >= options.text_agreement
                    }
                    _ => result.verdict.correct,
                };
                agreed += usize::from(ok);
                let usage = Usage {
                    prompt_tokens: result.prompt_tokens,
                    completion_tokens: result.completion_tokens,
                    ..Usage::default()
                };
                cost += candidate.price.cost(&usage, Duration::from_secs_f64(result.latency_ms / 1000.0));
            }
            let replayed = report.results.len();
            scores.push(CandidateScore {
                model: candidate.name.clone(),
                accuracy: if replayed == 0 { 0.0 } else { agreed as f64 / replayed as f64 },
                cases: replayed,
                agreed,
                errors: report.summary.errors,
                schema_valid_rate: report.summary.schema_valid_rate,
                latency_mean_ms: report.summary.latency_mean_ms,
                memory_bytes: candidate.memory_bytes,
                cost_per_call: cost / replayed.max(1) as f64,
            });
        }
        clusters.push(ClusterSelection {
            cluster: id,
            label: cluster.label.clone(),
            open_ended: cluster.open_ended,
            cases: cases.len(),
            logged_model: logged_models.join(", "),
            logged_latency_ms,
            logged_cost_per_call,
            candidates: scores,
            chosen: None,
        });
    }
    Selection { clusters }
}
