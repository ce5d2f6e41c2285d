//! What travels through a run: its identity, its privacy policy, and where its events go.
//!
//! Every model call and tool call a specialist makes, and every graph node that finishes, is reported to the
//! run's [`RunContext`] as a [`RunEvent`]: which run and which node it belongs to ([`CallIds`]), which
//! specialist, model or tool, what went in, what came out or what failed ([`Outcome`]), token usage and
//! latency, whether it was escalated and why, and which personal data was redacted. Hosts plug in a
//! [`Recorder`]; [`MemoryRecorder`] keeps the events in memory and
//! [`JsonlLedger`](crate::ledger::JsonlLedger) appends them to a file.

mod context;
mod event;
mod gate;
mod recorder;

pub use context::RunContext;
pub use event::{
    CallIds, EvaluationEvent, ModelCallEvent, NodeEvent, Outcome, PromotionEvent, RedactionEvent, RunEvent,
    ShadowEvent, ToolCallEvent,
};
pub use gate::{ModelCall, Parsed};
pub use recorder::{MemoryRecorder, Recorder};
