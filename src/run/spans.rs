//! `tracing` spans named and shaped after the OpenTelemetry semantic conventions for generative AI
//! (`gen_ai.*`), so that an OpenTelemetry layer (tracing-opentelemetry) shows a run in any OTel backend:
//! `invoke_agent {name}` for a specialist's run, `chat {model}` and `embeddings {model}` for model calls,
//! `execute_tool {tool}` for tool calls, nested as the run nests. The span's own name is the operation; the
//! full name is in `otel.name`, which tracing-opentelemetry uses as the exported span's name.

use tracing::field::Empty;
use tracing::Span;

use super::RunContext;
use crate::model::{Completion, FinishReason, LanguageModel};
use crate::tool::ToolError;
use crate::Error;

/// The span of a chat (or text) completion by `model`, its usage and finish reason recorded by [`finished`].
pub(crate) fn chat(ctx: &RunContext, model: &dyn LanguageModel, caller: &str) -> Span {
    tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {}", model.name()),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = model.provider(),
        gen_ai.request.model = model.name(),
        gen_ai.conversation.id = ctx.run_id(),
        gen_ai.agent.name = caller,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        error.type = Empty,
    )
}

/// The span of an embedding call.
pub(crate) fn embeddings(ctx: &RunContext, model: &dyn LanguageModel) -> Span {
    tracing::info_span!(
        "embeddings",
        otel.name = %format_args!("embeddings {}", model.name()),
        otel.kind = "client",
        gen_ai.operation.name = "embeddings",
        gen_ai.provider.name = model.provider(),
        gen_ai.request.model = model.name(),
        gen_ai.conversation.id = ctx.run_id(),
        error.type = Empty,
    )
}

/// The span of one tool call.
pub(crate) fn execute_tool(ctx: &RunContext, tool: &str) -> Span {
    tracing::info_span!(
        "execute_tool",
        otel.name = %format_args!("execute_tool {tool}"),
        otel.kind = "internal",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool,
        gen_ai.tool.type = "function",
        gen_ai.conversation.id = ctx.run_id(),
        error.type = Empty,
    )
}

/// The span of an agent's run (a specialist's loop).
pub(crate) fn invoke_agent(ctx: &RunContext, name: &str) -> Span {
    tracing::info_span!(
        "invoke_agent",
        otel.name = %format_args!("invoke_agent {name}"),
        otel.kind = "internal",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = name,
        gen_ai.conversation.id = ctx.run_id(),
        error.type = Empty,
    )
}

/// The conventions' name for a finish reason.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::EndOfText | FinishReason::Stop => "stop",
        FinishReason::MaxTokens | FinishReason::ContextFull => "length",
    }
}

/// Records a model call's usage and finish reason on its span.
pub(crate) fn finished(span: &Span, completion: &Completion) {
    span.record("gen_ai.usage.input_tokens", completion.usage.prompt_tokens as u64);
    span.record("gen_ai.usage.output_tokens", completion.usage.completion_tokens as u64);
    span.record("gen_ai.response.finish_reasons", finish_reason(completion.finish_reason));
}

/// Records an error's kind on a span (`error.type`).
pub(crate) fn failed(span: &Span, error: &Error) {
    span.record("error.type", tracing::field::debug(error.kind()));
}

/// Records a failure described in words (a cancelled stream) on a span.
pub(crate) fn failed_as(span: &Span, kind: &str) {
    span.record("error.type", kind);
}

/// Records a tool's error on its span.
pub(crate) fn tool_failed(span: &Span, error: &ToolError) {
    let kind = match error {
        ToolError::InvalidArguments(_) => "InvalidArguments",
        ToolError::Failed(_) => "Failed",
        ToolError::Panicked(_) => "Panicked",
        ToolError::Timeout(_) => "Timeout",
        ToolError::Output(_) => "Output",
    };
    span.record("error.type", kind);
}
