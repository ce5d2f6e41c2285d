//! The paper's LLM-to-SLM conversion loop over the ledger. This release has its first step, S2: curating
//! the logged model calls into a clean set of examples. Clustering, selection, export and promotion build on
//! it.
//!
//! ```
//! use slm_agents::distill::curate;
//! use slm_agents::ledger::LedgerRecord;
//!
//! let records: Vec<LedgerRecord> = Vec::new(); // ledger::read_jsonl(path)?.0
//! let curated = curate(&records);
//! println!("{}", curated.report);
//! ```

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ledger::LedgerRecord;
use crate::model::{LanguageModel, Message, Role};
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
    /// How many values were replaced in this call.
    pub redacted: usize,
}

impl CuratedCall {
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
        caller: call.specialist.clone(),
        model: call.model.clone(),
        escalated: call.remote || call.escalation.is_some(),
        messages,
        output,
        tool_calls,
        tools: call.tools.clone(),
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
/// kept call's request, by the same caller (0.97 keeps paraphrases and drops retypes of one request).
/// Returns how many were dropped, also counted in the report.
///
/// # Errors
/// Any error of the embedding model.
pub async fn remove_near_duplicates(curated: &mut Curated, model: &dyn LanguageModel, threshold: f32) -> Result<usize> {
    let requests: Vec<String> = curated.calls.iter().map(|c| c.request().to_owned()).collect();
    if requests.is_empty() {
        return Ok(0);
    }
    let vectors = model.embed(&requests).await?;
    let mut kept: Vec<usize> = Vec::new();
    let mut keep = vec![true; curated.calls.len()];
    for i in 0..curated.calls.len() {
        let twin = kept.iter().any(|&j| {
            curated.calls[j].caller == curated.calls[i].caller && cosine(&vectors[i], &vectors[j]) >= threshold
        });
        if twin {
            keep[i] = false;
        } else {
            kept.push(i);
        }
    }
    let mut flags = keep.into_iter();
    curated.calls.retain(|_| flags.next().unwrap_or(true));
    let dropped = requests.len() - curated.calls.len();
    curated.report.near_duplicates_removed += dropped;
    curated.count_kept();
    Ok(dropped)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (a.iter().map(|x| x * x).sum::<f32>().sqrt(), b.iter().map(|x| x * x).sum::<f32>().sqrt());
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
