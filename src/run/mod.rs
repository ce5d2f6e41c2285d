//! What travels through a run: its identity, its privacy policy, and where its events go.
//!
//! Every model call and tool call a specialist makes, and every graph node that finishes, is reported to the
//! run's [`RunContext`] as a [`RunEvent`]: which run and which node it belongs to ([`CallIds`]), which
//! specialist, model or tool, what went in, what came out or what failed ([`Outcome`]), token usage and
//! latency, whether it was escalated and why, and which personal data was redacted. Hosts plug in a
//! [`Recorder`]; [`MemoryRecorder`] keeps the events in memory and
//! [`JsonlLedger`](crate::ledger::JsonlLedger) appends them to a file.
//!
//! A run can also be watched as it happens: [`Agent::run_stream`](crate::agent::Agent::run_stream),
//! [`Graph::run_stream`](crate::graph::Graph::run_stream) and [`RunStream::new`] make it a [`RunStream`] of
//! [`RunUpdate`]s (nodes and calls as they start and finish, the text of the specialist that is writing, then
//! the output or the error).
//!
//! The same calls are also `tracing` spans after the OpenTelemetry semantic conventions for generative AI:
//! `invoke_agent {name}` for a specialist's run, `chat {model}` and `embeddings {model}` for model calls,
//! `execute_tool {tool}` for tool calls, nested as the run nests, with `gen_ai.operation.name`,
//! `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.usage.input_tokens` / `output_tokens`,
//! `gen_ai.response.finish_reasons`, `gen_ai.tool.name`, `gen_ai.agent.name`, `gen_ai.conversation.id` (the
//! run's id) and `error.type`. The exported span name is in `otel.name`, as tracing-opentelemetry expects. See
//! docs/ledger.md for sending them to an OpenTelemetry collector.

mod context;
mod event;
mod gate;
mod recorder;
pub(crate) mod spans;
mod stream;

pub use context::RunContext;
pub use event::{
    CallIds, EvaluationEvent, ModelCallEvent, NodeEvent, Outcome, PromotionEvent, RedactionEvent, RunEvent,
    ShadowEvent, ToolCallEvent,
};
pub use gate::{ModelCall, Parsed};
pub use recorder::{MemoryRecorder, Recorder};
pub use stream::{RunStream, RunUpdate};
