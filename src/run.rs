//! What travels through a run: its identity, its privacy policy, and where its events go.
//!
//! Every model call and tool call a specialist makes, and every graph node that finishes, is reported to the
//! run's [`RunContext`] as a [`RunEvent`]: which run and which node it belongs to ([`CallIds`]), which
//! specialist, model or tool, what went in, what came out or what failed ([`Outcome`]), token usage and
//! latency, whether it was escalated and why, and which personal data was redacted. Hosts plug in a
//! [`Recorder`]; [`MemoryRecorder`] keeps the events in memory and
//! [`JsonlLedger`](crate::ledger::JsonlLedger) appends them to a file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Message, Usage};
use crate::privacy::{PiiKind, Privacy};
use crate::tool::ToolCall;

/// Receives a run's events. Implementations must be cheap and must not block for long.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use slm_agents::run::{Recorder, RunEvent};
///
/// /// Counts tool calls.
/// #[derive(Default)]
/// struct ToolCounter(AtomicUsize);
///
/// impl Recorder for ToolCounter {
///     fn record(&self, event: RunEvent) {
///         if let RunEvent::ToolCall(_) = event {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait Recorder: Send + Sync {
    /// Called once per event, from whichever task made the call.
    fn record(&self, event: RunEvent);
}

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
}

impl RunEvent {
    /// The event's ids.
    pub fn ids(&self) -> &CallIds {
        match self {
            Self::ModelCall(e) => &e.ids,
            Self::ToolCall(e) => &e.ids,
            Self::Node(e) => &e.ids,
            Self::Redaction(e) => &e.ids,
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

/// The context of one run, passed to every node, specialist and tool call in it. Cheap to clone.
///
/// It carries the run's id, its [`Privacy`] policy, the [`Recorder`] its events go to, and where in the run
/// the current code is: the graph node ([`enter`](Self::enter)) and whether it is an escalation
/// ([`escalated`](Self::escalated)).
///
/// ```
/// use std::sync::Arc;
/// use slm_agents::run::{MemoryRecorder, RunContext};
///
/// let events = Arc::new(MemoryRecorder::default());
/// let ctx = RunContext::new().with_recorder(events.clone());
/// assert!(!ctx.run_id().is_empty());
/// // ... run specialists with `&ctx`, then read `events.events()`.
/// ```
#[derive(Clone)]
pub struct RunContext {
    recorders: Vec<Arc<dyn Recorder>>,
    privacy: Privacy,
    run: Arc<str>,
    next_id: Arc<AtomicU64>,
    scope: Option<Scope>,
    escalation: Option<Arc<str>>,
    route_reason: Option<Arc<str>>,
}

#[derive(Clone)]
struct Scope {
    id: u64,
    path: Arc<str>,
}

impl Default for RunContext {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("run", &self.run)
            .field("node", &self.node_path())
            .field("recorders", &self.recorders.len())
            .field("privacy", &self.privacy)
            .field("escalation", &self.escalation)
            .finish()
    }
}

fn fresh_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{ms:x}-{:x}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl RunContext {
    /// A context with a fresh run id that records nothing and lets data leave the device.
    pub fn new() -> Self {
        Self {
            recorders: Vec::new(),
            privacy: Privacy::default(),
            run: fresh_run_id().into(),
            next_id: Arc::new(AtomicU64::new(0)),
            scope: None,
            escalation: None,
            route_reason: None,
        }
    }

    /// Sends the run's events to `recorder`, as well as to any recorders added before (for example a
    /// [`MemoryRecorder`] for the report and a [`JsonlLedger`](crate::ledger::JsonlLedger) for the file).
    #[must_use]
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorders.push(recorder);
        self
    }

    /// Sets what may leave the device during the run (default [`Privacy::Allow`]).
    #[must_use]
    pub fn with_privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = privacy;
        self
    }

    /// Sets the run's id (default: made from the time, the process id and a counter, unique on this machine).
    #[must_use]
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run = id.into().into();
        self
    }

    /// The run's id, written on every event.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The run's privacy policy; models that send data off the device obey it.
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// The path of the graph node this context is in (`None` at the top of the run).
    pub fn node_path(&self) -> Option<&str> {
        self.scope.as_ref().map(|s| &*s.path)
    }

    /// Fresh ids for an event that starts now in this context: the next id of the run, under the current
    /// node. Use it to record events of your own.
    pub fn ids(&self) -> CallIds {
        CallIds {
            run: self.run.to_string(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            parent: self.scope.as_ref().map(|s| s.id),
            node: self.node_path().map(str::to_owned),
        }
    }

    /// A context for a node named `node` inside the current one; the graph executor enters one per node, so
    /// that events inside carry its id as their parent. Returns the child and the node's ids (for its
    /// [`NodeEvent`]).
    pub fn enter(&self, node: &str) -> (RunContext, CallIds) {
        let mut ids = self.ids();
        let path: Arc<str> = match self.node_path() {
            Some(outer) => format!("{outer}/{node}").into(),
            None => node.into(),
        };
        ids.node = Some(path.to_string());
        let mut child = self.clone();
        child.scope = Some(Scope { id: ids.id, path });
        child.route_reason = None;
        (child, ids)
    }

    /// A context whose model calls are recorded as escalated, for `reason`: the work inside goes to a larger
    /// model because the small ones could not do it. Teams use it when their manager cannot plan.
    #[must_use]
    pub fn escalated(&self, reason: impl Into<String>) -> RunContext {
        let mut child = self.clone();
        child.escalation = Some(reason.into().into());
        child
    }

    /// Why work in this context is escalated, if it is.
    pub fn escalation(&self) -> Option<&str> {
        self.escalation.as_deref()
    }

    /// The routing decision that made the current node run, if it ran on a route of a router.
    pub fn route_reason(&self) -> Option<&str> {
        self.route_reason.as_deref()
    }

    pub(crate) fn with_route_reason(mut self, reason: Option<Arc<str>>) -> Self {
        self.route_reason = reason;
        self
    }

    /// Why a call of `model` made now would be escalated (see [`ModelCallEvent::escalation`]).
    pub(crate) fn escalation_for(&self, remote: bool) -> Option<String> {
        match (&self.escalation, remote) {
            (Some(reason), _) => Some(reason.to_string()),
            (None, true) => Some(self.route_reason.as_deref().unwrap_or("remote model").to_owned()),
            (None, false) => None,
        }
    }

    /// Reports an event.
    pub fn record(&self, event: RunEvent) {
        if let Some((last, rest)) = self.recorders.split_last() {
            for r in rest {
                r.record(event.clone());
            }
            last.record(event);
        }
    }

    /// Whether anything listens to this run's events.
    pub fn is_recording(&self) -> bool {
        !self.recorders.is_empty()
    }
}

/// Calls `model` within a run under its privacy policy and builds the call's event (the caller may add tool
/// calls to it, then records it).
pub(crate) async fn call_model(
    model: &dyn crate::model::LanguageModel,
    request: crate::model::Request,
    ctx: &RunContext,
    caller: &str,
    step: usize,
) -> (crate::Result<crate::model::Completion>, ModelCallEvent) {
    let ids = ctx.ids();
    let messages = match &request.prompt {
        crate::model::Prompt::Chat(m) => m.clone(),
        crate::model::Prompt::Raw(text) => vec![Message::user(text.clone())],
    };
    let started = std::time::Instant::now();
    let (result, redactions) = crate::model::complete_gated(model, request, ctx).await;
    let event = ModelCallEvent {
        ids,
        specialist: caller.to_owned(),
        model: model.name().to_owned(),
        remote: model.is_remote(),
        step,
        messages,
        output: result.as_ref().ok().map(|c| c.text.clone()),
        tool_calls: Vec::new(),
        usage: result.as_ref().ok().map(|c| c.usage),
        latency: started.elapsed(),
        outcome: Outcome::of(&result),
        escalation: ctx.escalation_for(model.is_remote()),
        redactions,
    };
    (result, event)
}

/// A [`Recorder`] that keeps every event in memory.
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    events: Mutex<Vec<RunEvent>>,
}

impl MemoryRecorder {
    /// A copy of the events so far.
    pub fn events(&self) -> Vec<RunEvent> {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The tool calls so far.
    pub fn tool_calls(&self) -> Vec<ToolCallEvent> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::ToolCall(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The model calls so far.
    pub fn model_calls(&self) -> Vec<ModelCallEvent> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::ModelCall(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

impl Recorder for MemoryRecorder {
    fn record(&self, event: RunEvent) {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
    }
}
