//! What a run reports: model calls, tool calls, nodes, redactions.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Message, Usage};
use crate::privacy::PiiKind;
use crate::tool::ToolCall;
#[cfg(doc)]
use crate::{privacy::Privacy, run::RunContext};

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RunEvent {
    /// A call of a language model.
    ModelCall(ModelCallEvent),
    /// A call of a tool.
    ToolCall(ToolCallEvent),
    /// A graph node (or a team's step) finished.
    Node(NodeEvent),
    /// Personal data was replaced before texts were embedded by a remote model (model calls carry their own
    /// redactions; only kinds and placeholders are recorded, never the values).
    Redaction(RedactionEvent),
    /// A shadow comparison: a candidate and the serving agent answered the same request
    /// ([`distill::Shadowed`](crate::distill)).
    Shadow(ShadowEvent),
    /// A cluster's traffic was switched to its candidate, or back ([`distill::Shadowed`](crate::distill)).
    Promotion(PromotionEvent),
    /// An evaluation finished: its figures ([`Evaluation::record_to`](crate::eval::Evaluation::record_to)).
    Evaluation(EvaluationEvent),
}

impl RunEvent {
    /// The event's ids.
    pub fn ids(&self) -> &CallIds {
        match self {
            Self::ModelCall(e) => &e.ids,
            Self::ToolCall(e) => &e.ids,
            Self::Node(e) => &e.ids,
            Self::Redaction(e) => &e.ids,
            Self::Shadow(e) => &e.ids,
            Self::Promotion(e) => &e.ids,
            Self::Evaluation(e) => &e.ids,
        }
    }
}

/// Where an event belongs: its run, its own id, and the scope (graph node, team step) it happened in.
///
/// Ids are unique within a run and increase as events start; `parent` is the id of the enclosing node's
/// [`NodeEvent`], so the records of a run form a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallIds {
    /// The run's id (see [`RunContext::run_id`]).
    pub run: String,
    /// This event's id within the run.
    pub id: u64,
    /// The id of the node this event happened in; `None` at the top of the run.
    pub parent: Option<u64>,
    /// The path of graph node names this event happened in, outermost first, joined by `/`.
    pub node: Option<String>,
}

/// Whether a call succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded.
    Succeeded,
    /// It failed, with this error.
    Failed {
        /// The error, as text (with its causes).
        error: String,
    },
}

impl Outcome {
    /// Whether the call succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Succeeded)
    }

    /// A failure with this message.
    pub(crate) fn failed(error: impl Into<String>) -> Self {
        Self::Failed { error: error.into() }
    }

    pub(crate) fn of<T, E: std::fmt::Display>(result: &std::result::Result<T, E>) -> Self {
        match result {
            Ok(_) => Self::Succeeded,
            Err(e) => Self::Failed { error: e.to_string() },
        }
    }
}

/// Personal data replaced before texts went to a remote embedding model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedactionEvent {
    /// Where it happened.
    #[serde(flatten)]
    pub ids: CallIds,
    /// The remote model.
    pub model: String,
    /// What was replaced: kind and placeholder.
    pub replaced: Vec<(PiiKind, String)>,
}

/// One shadow comparison: the agent that served a request and the one that ran beside it (after the answer
/// was returned) answered it; whether they agreed, and the cluster's agreement so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowEvent {
    /// Where it happened (the run of the served request).
    #[serde(flatten)]
    pub ids: CallIds,
    /// The cluster the request was routed to.
    pub cluster: usize,
    /// The agent whose answer was returned.
    pub served_by: String,
    /// The agent that ran in its shadow.
    pub shadow: String,
    /// Whether their answers agreed (a shadow that failed does not agree).
    pub agreed: bool,
    /// The cluster's agreement over its recent comparisons, from 0 to 1.
    pub agreement: f64,
    /// How many recent comparisons that is.
    pub compared: usize,
    /// The shadow's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The figures of one evaluation: what was evaluated, on how many cases, how well. Its model calls are
/// recorded beside it, one run per case (`<name>/<case id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationEvent {
    /// Where it happened (the run is the evaluation's name).
    #[serde(flatten)]
    pub ids: CallIds,
    /// What was evaluated, as the caller named it ("base", "adapter r16").
    pub name: String,
    /// The model, as its calls name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Cases run.
    pub cases: usize,
    /// Cases scored correct.
    pub correct: usize,
    /// `correct / cases`.
    pub accuracy: f64,
    /// Cases whose turn failed.
    pub errors: usize,
    /// Mean latency of a case, in milliseconds.
    pub latency_mean_ms: f64,
    /// Prompt tokens, all cases.
    pub prompt_tokens: usize,
    /// Generated tokens, all cases.
    pub completion_tokens: usize,
}

/// A routing decision of a cluster: its traffic switched to the candidate (promoted) or back (rolled back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionEvent {
    /// Where it happened (the run whose comparison decided it).
    #[serde(flatten)]
    pub ids: CallIds,
    /// The cluster.
    pub cluster: usize,
    /// The candidate.
    pub candidate: String,
    /// `true`: the candidate now serves the cluster; `false`: it was rolled back.
    pub promoted: bool,
    /// Why, in words (the agreement, the number of calls and the rule's bound).
    pub reason: String,
}

/// A call of a language model by a specialist, a team's manager or a router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCallEvent {
    /// Where it happened.
    #[serde(flatten)]
    pub ids: CallIds,
    /// Who made the call: a specialist's name, `team/manager`, or `router`.
    pub specialist: String,
    /// The model's name.
    pub model: String,
    /// Whether the model runs off the device ([`LanguageModel::is_remote`](crate::model::LanguageModel::is_remote)).
    pub remote: bool,
    /// The step of the caller's loop (0 for the first call).
    pub step: usize,
    /// The messages as the caller wrote them, before any redaction (a raw prompt is recorded as one user
    /// message).
    pub messages: Vec<Message>,
    /// The text generated, if the call succeeded (with redacted values restored).
    pub output: Option<String>,
    /// The tool calls the output asked for (filled by specialists; empty for answers).
    pub tool_calls: Vec<ToolCall>,
    /// Whether the output validated against the schema it was generated under (a specialist's tool calls
    /// against their tools' schemas): `Some(false)` for an output that did not parse or validate, `None` where
    /// nothing was checked (free text, or no output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_valid: Option<bool>,
    /// The tools the model was shown, with their argument schemas (filled by specialists; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::tool::ToolSpec>,
    /// The constraint the output was generated under, if any (for a specialist, the grammar of its turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<crate::model::Constraint>,
    /// Token counts and timings (time to first token, total time), if the call succeeded.
    pub usage: Option<Usage>,
    /// Wall time of the call.
    pub latency: Duration,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// Why the call was escalated, or `None` if it was not. A call is escalated when it runs within an
    /// escalation ([`RunContext::escalated`], e.g. a team whose manager could not plan) or goes to a remote
    /// model; the reason is the escalation's, else the routing decision that led to the node, else
    /// "remote model".
    pub escalation: Option<String>,
    /// Personal data replaced before the call under [`Privacy::Redact`]: kind and placeholder (never the
    /// value).
    pub redactions: Vec<(PiiKind, String)>,
}

/// A call of a tool by a specialist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallEvent {
    /// Where it happened.
    #[serde(flatten)]
    pub ids: CallIds,
    /// The specialist that made the call.
    pub specialist: String,
    /// The tool's name.
    pub tool: String,
    /// The arguments the model wrote.
    pub arguments: Value,
    /// The tool's result, if it succeeded.
    pub result: Option<Value>,
    /// Whether it succeeded (failures include invalid arguments, panics and timeouts).
    pub outcome: Outcome,
    /// Wall time of the call.
    pub latency: Duration,
}

/// A graph node that finished (succeeded or failed after its tries). Its `ids.id` is the `parent` of the
/// events inside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// The node's ids; `ids.node` is its path.
    #[serde(flatten)]
    pub ids: CallIds,
    /// Wall time from start to end, tries included.
    pub latency: Duration,
    /// How many times it ran.
    pub attempts: u32,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// The routing decision that made it run, if it ran on a route.
    pub route_reason: Option<String>,
}
