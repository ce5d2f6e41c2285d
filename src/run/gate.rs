//! The one gate every model call of a run passes: the run's privacy policy is applied and the call recorded.
//!
//! Specialists, teams, routers and the host's own code call models within a run through [`RunContext`]'s
//! methods ([`complete`](RunContext::complete), [`stream`](RunContext::stream),
//! [`embed`](RunContext::embed), [`generate`](RunContext::generate)) or, to name the caller and read the
//! output, through a [`ModelCall`]. The model layer knows nothing of runs. For a remote model the gate applies
//! the run's policy before the model is called (`LocalOnly` refuses, `Redact` replaces personal data and
//! restores it in the answer); a [`RemoteModel`](crate::model::RemoteModel) then applies its own policy as well,
//! so the stricter of the two always holds.

use std::borrow::Cow;
use std::time::Instant;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::{spans, CallIds, ModelCallEvent, Outcome, RedactionEvent, RunContext, RunEvent, RunUpdate};
use crate::model::{Completion, Constraint, LanguageModel, Message, Prompt, Request, TokenStream};
use crate::privacy::Redaction;
use crate::structured::OutputSchema;
use crate::tool::{ToolCall, ToolSpec};
use crate::{Error, Result};

/// What a caller read from a completion: a value, and the tool calls the output asked for (recorded on the
/// call's [`ModelCallEvent`]). From the reader given to [`ModelCall::complete_parsed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Parsed<T> {
    /// The value read.
    pub value: T,
    /// The tool calls the output asked for, if any.
    pub tool_calls: Vec<ToolCall>,
    /// Whether the output validated against its schema (tool arguments against their tools' schemas), if
    /// the reader checked; recorded as [`ModelCallEvent::schema_valid`](crate::run::ModelCallEvent::schema_valid).
    pub schema_valid: Option<bool>,
}

impl<T> Parsed<T> {
    /// A value that asks for no tool call.
    pub fn value(value: T) -> Self {
        Self { value, tool_calls: Vec::new(), schema_valid: None }
    }

    /// A value that asks for these tool calls.
    pub fn calls(value: T, tool_calls: Vec<ToolCall>) -> Self {
        Self { value, tool_calls, schema_valid: None }
    }

    /// Says whether the output validated against its schema.
    pub fn validated(mut self, valid: bool) -> Self {
        self.schema_valid = Some(valid);
        self
    }
}

/// One model call within a run, from [`RunContext::model_call`]: say who makes it, then make it.
///
/// ```no_run
/// use slm_agents::model::{LanguageModel, Message, Request};
/// use slm_agents::run::RunContext;
///
/// # async fn demo(model: &dyn LanguageModel, ctx: &RunContext) -> slm_agents::Result<()> {
/// let request = Request::chat([Message::user("Summarise: ...")]).with_max_tokens(64);
/// let summary = ctx.model_call(model).caller("summariser").complete(request).await?;
/// # Ok(()) }
/// ```
#[must_use = "a model call does nothing until it is made"]
pub struct ModelCall<'a> {
    ctx: &'a RunContext,
    model: &'a dyn LanguageModel,
    caller: Cow<'a, str>,
    step: usize,
    tools: &'a [ToolSpec],
}

impl std::fmt::Debug for ModelCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCall")
            .field("model", &self.model.name())
            .field("caller", &self.caller)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl<'a> ModelCall<'a> {
    pub(super) fn new(ctx: &'a RunContext, model: &'a dyn LanguageModel) -> Self {
        Self { ctx, model, caller: Cow::Borrowed("host"), step: 0, tools: &[] }
    }

    /// Who makes the call, as recorded (a specialist's name, `team/manager`, `router`; default `host`).
    pub fn caller(mut self, caller: impl Into<Cow<'a, str>>) -> Self {
        self.caller = caller.into();
        self
    }

    /// The step of the caller's loop (default 0).
    pub fn step(mut self, step: usize) -> Self {
        self.step = step;
        self
    }

    /// The tools the model is shown in this call, as recorded (default none).
    pub fn tools(mut self, tools: &'a [ToolSpec]) -> Self {
        self.tools = tools;
        self
    }

    /// Makes the call and records it.
    ///
    /// # Errors
    /// [`Error::PrivacyViolation`] when the policy keeps the request on the device (nothing is sent); any
    /// error of the model.
    pub async fn complete(self, request: Request) -> Result<Completion> {
        self.complete_parsed(request, |_| Ok(Parsed::value(()))).await.map(|(c, ())| c)
    }

    /// Makes the call, reads its output with `read`, and records the call with the tool calls read and, if
    /// `read` failed, its error as the outcome (an output the caller cannot use is a failed call in the
    /// ledger). Returns the completion and the value read.
    ///
    /// # Errors
    /// As [`complete`](Self::complete), or the error of `read`.
    pub async fn complete_parsed<T>(
        self,
        request: Request,
        read: impl FnOnce(&Completion) -> Result<Parsed<T>>,
    ) -> Result<(Completion, T)> {
        use tracing::Instrument;
        let span = spans::chat(self.ctx, self.model, &self.caller);
        let (record, request) = span.in_scope(|| self.start(request));
        let result = match request {
            Ok((request, redaction)) => self
                .call_model(request, record.ids.id)
                .instrument(span.clone())
                .await
                .map(|c| c.restored(redaction.as_ref())),
            Err(e) => Err(e),
        };
        match &result {
            Ok(c) => spans::finished(&span, c),
            Err(e) => spans::failed(&span, e),
        }
        let (outcome, tool_calls, valid, value) = match &result {
            Ok(completion) => match read(completion) {
                Ok(parsed) => (Outcome::Succeeded, parsed.tool_calls, parsed.schema_valid, Ok(parsed.value)),
                Err(e) => {
                    let valid = e.is_invalid_output().then_some(false);
                    (Outcome::failed(e.to_string()), Vec::new(), valid, Err(e))
                }
            },
            Err(e) => (Outcome::failed(e.to_string()), Vec::new(), None, Err(Error::WorkerStopped)),
        };
        record.finish(self.ctx, result.as_ref().ok(), outcome, tool_calls, valid);
        let completion = result?;
        Ok((completion, value?))
    }

    /// Calls the model; within a [`RunStream`](super::RunStream) that wants tokens, and for a model that
    /// streams them as it completes, as a stream whose pieces go to the run's stream.
    async fn call_model(&self, request: Request, call: u64) -> Result<Completion> {
        match self.ctx.live().filter(|live| live.wants_tokens() && self.model.streams_tokens()) {
            Some(live) => {
                self.model
                    .stream(request)
                    .finish_with(|text| live.push(RunUpdate::Token { call, specialist: self.caller.to_string(), text }))
                    .await
            }
            None => self.model.complete(request).await,
        }
    }

    /// Streams the call; it is recorded when the stream ends (or is dropped, as a failed call).
    pub fn stream(self, request: Request) -> TokenStream {
        let span = spans::chat(self.ctx, self.model, &self.caller);
        let (record, request) = span.in_scope(|| self.start(request));
        let (stream, redaction) = match request {
            Ok((request, redaction)) => (span.in_scope(|| self.model.stream(request)), redaction),
            Err(e) => (TokenStream::failed(e), None),
        };
        let ctx = self.ctx.clone();
        // Pieces reach the reader with placeholders (a value may be split over pieces); the finished
        // completion has the values back.
        let stream = match redaction {
            Some(r) => stream.map_completion(move |c| c.restored(Some(&r))),
            None => stream,
        };
        // The span lives until the stream ends: its usage is known then.
        stream.on_end(move |end| {
            use crate::model::StreamEnd;
            match end {
                StreamEnd::Finished(c) => {
                    spans::finished(&span, c);
                    record.finish(&ctx, Some(c), Outcome::Succeeded, Vec::new(), None)
                }
                StreamEnd::Failed(e) => {
                    spans::failed(&span, e);
                    record.finish(&ctx, None, Outcome::failed(e.to_string()), Vec::new(), None)
                }
                StreamEnd::Dropped => {
                    spans::failed_as(&span, "cancelled");
                    record.finish(&ctx, None, Outcome::failed("cancelled"), Vec::new(), None)
                }
            }
        })
    }

    /// Generates a `T` (as [`StructuredExt::generate`](crate::structured::StructuredExt::generate): greedy,
    /// at most 512 tokens) and records the call; an output that does not parse is recorded as failed.
    ///
    /// # Errors
    /// As [`StructuredExt::generate`](crate::structured::StructuredExt::generate), or
    /// [`Error::PrivacyViolation`].
    pub async fn generate<T>(self, messages: Vec<Message>) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned,
    {
        let schema = OutputSchema::of::<T>()?;
        let request = Request::chat(messages).with_max_tokens(512).with_constraint(schema.constraint());
        self.complete_parsed(request, |c| schema.parse::<T>(c).map(|v| Parsed::value(v).validated(true)))
            .await
            .map(|(_, v)| v)
    }

    /// Embeds texts under the run's policy. For a remote model, `LocalOnly` refuses (nothing is sent) and
    /// `Redact` embeds the texts with placeholders (a [`RedactionEvent`] records kinds and placeholders).
    ///
    /// # Errors
    /// [`Error::PrivacyViolation`], or any error of the model.
    pub async fn embed(self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        use tracing::Instrument;
        let span = spans::embeddings(self.ctx, self.model);
        let result = self.embed_unspanned(texts).instrument(span.clone()).await;
        if let Err(e) = &result {
            spans::failed(&span, e);
        }
        result
    }

    async fn embed_unspanned(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if !self.model.is_remote() {
            return self.model.embed(texts).await;
        }
        let mut texts = texts.to_vec();
        let redaction = {
            let mut refs: Vec<&mut String> = texts.iter_mut().collect();
            self.ctx.privacy().apply(self.model.name(), &mut refs)?
        };
        if let Some(r) = redaction.filter(|r| !r.replacements().is_empty()) {
            self.ctx.record(RunEvent::Redaction(RedactionEvent {
                ids: self.ctx.ids(),
                model: self.model.name().to_owned(),
                replaced: r.replaced(),
            }));
        }
        self.model.embed(&texts).await
    }

    /// The call's record so far, and the request under the run's policy with what to restore the answer with
    /// (or why it may not be sent).
    fn start(&self, mut request: Request) -> (Pending, Result<(Request, Option<Redaction>)>) {
        let remote = self.model.is_remote();
        let pending = Pending {
            ids: self.ctx.ids(),
            caller: self.caller.to_string(),
            model: self.model.name().to_owned(),
            remote,
            step: self.step,
            messages: match &request.prompt {
                Prompt::Chat(m) => m.clone(),
                Prompt::Raw(text) => vec![Message::user(text.clone())],
            },
            started: Instant::now(),
            escalation: self.ctx.escalation_for(remote),
            tools: self.tools.to_vec(),
            constraint: request.constraint.clone(),
        };
        self.ctx.announce(|| RunUpdate::ModelCallStarted {
            ids: pending.ids.clone(),
            specialist: pending.caller.clone(),
            model: pending.model.clone(),
            step: pending.step,
        });
        if !remote {
            return (pending, Ok((request, None)));
        }
        // Applied here, before any model is called, so that it holds for every remote model, ours or a host's.
        let redaction = self.ctx.privacy().apply(self.model.name(), &mut request.prompt.texts_mut());
        (pending, redaction.map(|r| (request, r)))
    }
}

/// What is known of a call when it starts.
struct Pending {
    ids: CallIds,
    caller: String,
    model: String,
    remote: bool,
    step: usize,
    messages: Vec<Message>,
    started: Instant,
    escalation: Option<String>,
    tools: Vec<ToolSpec>,
    constraint: Option<Constraint>,
}

impl Pending {
    fn finish(
        self,
        ctx: &RunContext,
        completion: Option<&Completion>,
        outcome: Outcome,
        tool_calls: Vec<ToolCall>,
        schema_valid: Option<bool>,
    ) {
        ctx.record(RunEvent::ModelCall(ModelCallEvent {
            ids: self.ids,
            specialist: self.caller,
            model: self.model,
            remote: self.remote,
            step: self.step,
            messages: self.messages,
            output: completion.map(|c| c.text.clone()),
            tool_calls,
            schema_valid,
            tools: self.tools,
            constraint: self.constraint,
            usage: completion.map(|c| c.usage),
            latency: self.started.elapsed(),
            outcome,
            escalation: self.escalation,
            redactions: completion.map(|c| c.redactions.clone()).unwrap_or_default(),
        }));
    }
}

impl RunContext {
    /// A model call within this run, to name its caller and step before making it.
    pub fn model_call<'a>(&'a self, model: &'a dyn LanguageModel) -> ModelCall<'a> {
        ModelCall::new(self, model)
    }

    /// Calls `model` within this run: the run's [`Privacy`](crate::privacy::Privacy) policy applies (for a remote model, `LocalOnly`
    /// refuses before anything is sent, `Redact` replaces personal data and restores it in the answer) and the
    /// call is recorded as a [`ModelCallEvent`] by caller `host`.
    ///
    /// ```no_run
    /// use slm_agents::model::{LanguageModel, Message, Request};
    /// use slm_agents::privacy::Privacy;
    /// use slm_agents::run::RunContext;
    ///
    /// # async fn demo(llm: &dyn LanguageModel) -> slm_agents::Result<()> {
    /// let ctx = RunContext::new().with_privacy(Privacy::redact());
    /// let answer = ctx.complete(llm, Request::chat([Message::user("Write to dana@example.com")])).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::PrivacyViolation`], or any error of the model.
    pub async fn complete(&self, model: &dyn LanguageModel, request: Request) -> Result<Completion> {
        self.model_call(model).complete(request).await
    }

    /// Streams a call of `model` within this run, under its policy; recorded when the stream ends.
    pub fn stream(&self, model: &dyn LanguageModel, request: Request) -> TokenStream {
        self.model_call(model).stream(request)
    }

    /// Embeds texts with `model` within this run, under its policy.
    ///
    /// # Errors
    /// [`Error::PrivacyViolation`], or any error of the model.
    pub async fn embed(&self, model: &dyn LanguageModel, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.model_call(model).embed(texts).await
    }

    /// Generates a `T` with `model` within this run, under its policy, recorded.
    ///
    /// # Errors
    /// As [`ModelCall::generate`].
    pub async fn generate<T>(&self, model: &dyn LanguageModel, messages: Vec<Message>) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned,
    {
        self.model_call(model).generate(messages).await
    }
}
