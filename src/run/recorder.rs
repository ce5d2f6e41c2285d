//! Where a run's events go.

use std::sync::Mutex;

use super::{ModelCallEvent, RunEvent, ToolCallEvent};

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
