//! The paper's LLM-to-SLM conversion loop over the ledger: curate the logged calls (S2), cluster them into
//! recurring tasks (S3), replay each task's held-out calls on candidate small models (S4), write training
//! files per task (S5), and switch a task's traffic to its small model once it agrees with the large one in
//! its shadow, with rollback (S6). S1 is the [ledger](crate::ledger) itself.
//!
//! ```no_run
//! use std::sync::Arc;
//! use slm_agents::distill::{self, ClusterOptions};
//! use slm_agents::model::LlamaModel;
//!
//! # async fn demo() -> slm_agents::Result<()> {
//! let (records, _) = slm_agents::ledger::read_jsonl("ledger.jsonl")?;
//! let mut curated = distill::curate(&records);                        // S2
//! let embedder = LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").load()?;
//! distill::remove_near_duplicates(&mut curated, &embedder, 0.97).await?;
//! let clustering = distill::cluster(&curated, &embedder, &ClusterOptions::default()).await?; // S3
//! println!("{}\n{clustering}", curated.report);
//! distill::export(&curated, &clustering, "export", 0.2)?;               // S5
//! # Ok(()) }
//! ```
//!
#![doc = include_str!("../../docs/distill.md")]

mod cluster;
mod export;
mod select;
mod shadow;

pub use cluster::{
    cluster, embed_requests, fit, purity, Cluster, ClusterOptions, ClusterRouter, Clustering, TextFeatures,
};
#[cfg(any(feature = "train", docsrs))]
pub(crate) use export::calls_in;
pub use export::{answer_text, chat_example, export, is_held_out, parse_calls, task_tool, ExportedCluster};
pub use select::{
    case_of, select, text_similarity, Candidate, CandidateScore, ClusterSelection, SelectOptions, Selection,
};
pub use shadow::{agree_json, ClusterStatus, PromotionRule, Shadowed, ShadowedBuilder};

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ledger::LedgerRecord;
use crate::model::{Constraint, LanguageModel, Message, Role, Usage};
use crate::privacy::Redactor;
use crate::run::{ModelCallEvent, RunEvent};
use crate::tool::{ToolCall, ToolSpec};
use crate::Result;

/// One logged model call, curated: successful, scrubbed of personal data, not a duplicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CuratedCall {
    /// The run it was made in.
    pub run: String,
    /// Its position among the ledger's records (the record's `seq`).
    pub seq: u64,
    /// Its id within its run.
    #[serde(default)]
    pub id: u64,
    /// Who made it (a specialist's name, `team/manager`, `router`, `host`).
    pub caller: String,
    /// The model that answered.
    pub model: String,
    /// Whether it went to a large model: escalated, or to a remote model (the calls a small model could
    /// take over).
    pub escalated: bool,
    /// The messages, with personal data replaced by placeholders.
    pub messages: Vec<Message>,
    /// The output, scrubbed the same way.
    pub output: String,
    /// The tool calls the output asked for, their string arguments scrubbed.
    pub tool_calls: Vec<ToolCall>,
    /// The tools the model was shown.
    pub tools: Vec<ToolSpec>,
    /// The constraint the output was generated under, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    /// Its token counts, if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Its wall time, in milliseconds.
    #[serde(default)]
    pub latency_ms: f64,
    /// How many values were replaced in this call.
    pub redacted: usize,
}

impl CuratedCall {
    /// What must be equal for two calls to be near-duplicates, besides a request alike: the turns after the
    /// request (earlier calls and tool results), the output and the calls made.
    fn task_key(&self) -> (Vec<&str>, &str, &[ToolCall]) {
        let last_user = self.messages.iter().rposition(|m| m.role == Role::User).map_or(0, |i| i + 1);
        let after: Vec<&str> = self.messages[last_user..].iter().map(|m| m.content.as_str()).collect();
        (after, self.output.as_str(), &self.tool_calls)
    }

    /// The request: the last user message.
    pub fn request(&self) -> &str {
        self.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str())
    }
}

/// What curation kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CurateReport {
    /// Model calls in the ledger.
    pub calls: usize,
    /// Failed calls, dropped (nothing to learn from).
    pub failed_dropped: usize,
    /// Exact duplicates (same caller, same scrubbed messages and output), dropped.
    pub duplicates_removed: usize,
    /// Near-duplicates, dropped by [`remove_near_duplicates`].
    pub near_duplicates_removed: usize,
    /// Kept calls in which personal data was replaced.
    pub redacted_calls: usize,
    /// Kept calls that went to a large model.
    pub escalated: usize,
    /// Calls kept.
    pub kept: usize,
}

impl std::fmt::Display for CurateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model calls          {}", self.calls)?;
        writeln!(f, "failed, dropped      {}", self.failed_dropped)?;
        writeln!(f, "duplicates, dropped  {} exact, {} near", self.duplicates_removed, self.near_duplicates_removed)?;
        writeln!(f, "kept                 {} ({} to a large model)", self.kept, self.escalated)?;
        write!(f, "personal data        replaced in {} kept calls", self.redacted_calls)
    }
}

/// The calls curation kept, and its report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curated {
    /// The kept calls, in ledger order.
    pub calls: Vec<CuratedCall>,
    /// The counts.
    pub report: CurateReport,
}

/// Step S2 of the conversion loop: keeps the successful model calls of a ledger, marks those that went to a
/// large model, replaces personal data in their messages, outputs and tool arguments (with
/// [`Redactor`]: one numbering per call, so a placeholder means one value within it), and drops exact
/// duplicates. Near-duplicates need embeddings: [`remove_near_duplicates`].
pub fn curate(records: &[LedgerRecord]) -> Curated {
    let redactor = Redactor::new();
    let mut report = CurateReport::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut calls = Vec::new();
    for record in records {
        let RunEvent::ModelCall(call) = &record.event else { continue };
        report.calls += 1;
        let Some(output) = call.output.as_ref().filter(|_| call.outcome.is_success()) else {
            report.failed_dropped += 1;
            continue;
        };
        let curated = scrub(&redactor, record.seq, call, output);
        let key = serde_json::to_string(&(&curated.caller, &curated.messages, &curated.output)).unwrap_or_default();
        if !seen.insert(key) {
            report.duplicates_removed += 1;
            continue;
        }
        calls.push(curated);
    }
    let mut curated = Curated { calls, report };
    curated.count_kept();
    curated
}

impl Curated {
    /// Counts what the kept calls are: how many, how many redacted, how many to a large model.
    fn count_kept(&mut self) {
        self.report.kept = self.calls.len();
        self.report.redacted_calls = self.calls.iter().filter(|c| c.redacted > 0).count();
        self.report.escalated = self.calls.iter().filter(|c| c.escalated).count();
    }
}

fn scrub(redactor: &Redactor, seq: u64, call: &ModelCallEvent, output: &str) -> CuratedCall {
    // Every text of the call in one list, redacted with one numbering, then put back in place.
    let mut texts: Vec<String> = call.messages.iter().map(|m| m.content.clone()).collect();
    texts.push(output.to_owned());
    let arguments: Vec<Value> = call.tool_calls.iter().map(|c| c.arguments.clone()).collect();
    for a in &arguments {
        strings(a, &mut texts);
    }
    let (mut out, redaction) = redactor.redact_many(&texts);
    let mut out = out.drain(..);
    let messages =
        call.messages.iter().map(|m| Message { content: out.next().unwrap_or_default(), ..m.clone() }).collect();
    let output = out.next().unwrap_or_default();
    let tool_calls = call
        .tool_calls
        .iter()
        .zip(arguments)
        .map(|(c, mut a)| {
            put_strings(&mut a, &mut out);
            ToolCall { tool: c.tool.clone(), arguments: a }
        })
        .collect();
    CuratedCall {
        run: call.ids.run.clone(),
        seq,
        id: call.ids.id,
        caller: call.specialist.clone(),
        model: call.model.clone(),
        escalated: call.remote || call.escalation.is_some(),
        messages,
        output,
        tool_calls,
        tools: call.tools.clone(),
        constraint: call.constraint.clone(),
        usage: call.usage,
        latency_ms: call.latency.as_secs_f64() * 1000.0,
        redacted: redaction.replacements().len(),
    }
}

fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn put_strings(value: &mut Value, from: &mut impl Iterator<Item = String>) {
    match value {
        Value::String(s) => {
            if let Some(new) = from.next() {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| put_strings(v, from)),
        Value::Object(map) => map.values_mut().for_each(|v| put_strings(v, from)),
        _ => {}
    }
}

/// Drops near-duplicates: a call whose request embeds within `threshold` cosine similarity of an earlier
/// kept call's request (or whose request has the same words, punctuation and case aside), by the same
/// caller, with the same turns after the request and the same output: 0.97 drops retypes of one request and
/// keeps paraphrases; a request that differs in a value its output holds is never a near-duplicate. The embeddings are compared after subtracting their mean: a decoder model's embeddings share a
/// large common part that makes any two requests look alike.
/// Returns how many were dropped, also counted in the report. Embeds every request; with embeddings at
/// hand, use [`drop_near_duplicates`].
///
/// # Errors
/// Any error of the embedding model.
pub async fn remove_near_duplicates(curated: &mut Curated, model: &dyn LanguageModel, threshold: f32) -> Result<usize> {
    let mut embeddings = embed_requests(curated, model).await?;
    Ok(drop_near_duplicates(curated, &mut embeddings, threshold))
}

/// [`remove_near_duplicates`] with the embeddings of the calls' requests at hand (one per call, as
/// [`embed_requests`] returns); the embeddings of dropped calls are dropped too, so they stay in step.
pub fn drop_near_duplicates(curated: &mut Curated, embeddings: &mut Vec<Vec<f32>>, threshold: f32) -> usize {
    let n = curated.calls.len().min(embeddings.len());
    let centred = centre(&embeddings[..n]);
    let words: Vec<String> = curated.calls[..n].iter().map(|c| words(c.request()).join(" ")).collect();
    let mut kept: Vec<usize> = Vec::new();
    let mut keep = vec![true; curated.calls.len()];
    for i in 0..n {
        let (a, key) = (&curated.calls[i], curated.calls[i].task_key());
        let twin = kept.iter().find(|&&j| {
            let b = &curated.calls[j];
            b.caller == a.caller
                && b.task_key() == key
                && (words[i] == words[j] || crate::router::cosine(&centred[i], &centred[j]) >= threshold)
        });
        if let Some(&j) = twin {
            tracing::debug!(request = a.request(), twin = curated.calls[j].request(), "near-duplicate");
            keep[i] = false;
        } else {
            kept.push(i);
        }
    }
    let before = curated.calls.len();
    let mut flags = keep.iter();
    curated.calls.retain(|_| *flags.next().unwrap_or(&true));
    let mut flags = keep.iter();
    embeddings.retain(|_| *flags.next().unwrap_or(&true));
    let dropped = before - curated.calls.len();
    curated.report.near_duplicates_removed += dropped;
    curated.count_kept();
    dropped
}

/// The words of a text, lower-cased, without punctuation.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// The mean of vectors (of the first one's length).
pub(crate) fn mean(vectors: &[Vec<f32>]) -> Vec<f32> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; dim];
    for v in vectors {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= vectors.len().max(1) as f32);
    mean
}

/// The vectors minus their mean.
fn centre(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mean = mean(vectors);
    vectors.iter().map(|v| v.iter().zip(&mean).map(|(x, m)| x - m).collect()).collect()
}
