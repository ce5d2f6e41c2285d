//! What travels through a run: where its events go.
//!
//! Every model call and tool call a specialist makes is reported to the run's [`RunContext`] as a
//! [`RunEvent`]: which specialist, which model or tool, what went in, what came out or what failed, token
//! usage and latency. Hosts plug in a [`Recorder`]; [`MemoryRecorder`] keeps the events in memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Message, Usage};
use crate::privacy::Privacy;

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

/// One model call or tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RunEvent {
    /// A call of a language model.
    ModelCall(ModelCallEvent),
    /// A call of a tool.
    ToolCall(ToolCallEvent),
    /// Personal data was replaced before a remote call (only kinds and placeholders are recorded, never the
    /// values).
    Redaction(RedactionEvent),
}

/// Personal data replaced before a call of a remote model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedactionEvent {
    /// The remote model.
    pub model: String,
    /// What was replaced: kind and placeholder.
    pub replaced: Vec<(crate::privacy::PiiKind, String)>,
}

/// A call of a language model by a specialist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCallEvent {
    /// The specialist that made the call.
    pub specialist: String,
    /// The model's name.
    pub model: String,
    /// The step of the specialist's loop (0 for the first call).
    pub step: usize,
    /// The messages sent.
    pub messages: Vec<Message>,
    /// The text generated, if the call succeeded.
    pub output: Option<String>,
    /// The error, if it failed.
    pub error: Option<String>,
    /// Token counts and timings, if the call succeeded.
    pub usage: Option<Usage>,
    /// Wall time of the call.
    pub latency: Duration,
}

/// A call of a tool by a specialist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallEvent {
    /// The specialist that made the call.
    pub specialist: String,
    /// The tool's name.
    pub tool: String,
    /// The arguments the model wrote.
    pub arguments: Value,
    /// The tool's result, if it succeeded.
    pub result: Option<Value>,
    /// The error, if it failed (including invalid arguments, panics and timeouts).
    pub error: Option<String>,
    /// Wall time of the call.
    pub latency: Duration,
}

/// The context of one run, passed to every specialist and tool call in it. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use slm_agents::run::{MemoryRecorder, RunContext};
///
/// let events = Arc::new(MemoryRecorder::default());
/// let ctx = RunContext::new().with_recorder(events.clone());
/// // ... run specialists with `&ctx`, then read `events.events()`.
/// # let _ = ctx;
/// ```
#[derive(Clone, Default)]
pub struct RunContext {
    recorder: Option<Arc<dyn Recorder>>,
    privacy: Privacy,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("recorder", &self.recorder.is_some())
            .field("privacy", &self.privacy)
            .finish()
    }
}

impl RunContext {
    /// A context that records nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the run's events to `recorder`.
    #[must_use]
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Sets what may leave the device during the run (default [`Privacy::Allow`]).
    #[must_use]
    pub fn with_privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = privacy;
        self
    }

    /// The run's privacy policy; models that send data off the device obey it.
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// Reports an event.
    pub fn record(&self, event: RunEvent) {
        if let Some(r) = &self.recorder {
            r.record(event);
        }
    }
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
