//! The language-model layer: one trait for every model, local or remote.
//!
//! A [`LanguageModel`] turns a [`Request`] (chat messages or a raw prompt, sampling settings, stop strings, a
//! token limit and an optional decoding [`Constraint`]) into a [`Completion`] with [`Usage`] figures, or into a
//! [`TokenStream`]. [`LlamaModel`] runs a GGUF file in-process through llama.cpp.
//!
//! Typed output on top of this layer lives in [`crate::structured`].
//!
#![doc = include_str!("../../docs/models.md")]

mod llama;
#[cfg(feature = "remote")]
mod remote;
mod request;
#[cfg(feature = "test-util")]
mod scripted;
mod stream;

pub use llama::{LlamaModel, LlamaModelBuilder};
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use remote::{RemoteModel, RemoteModelBuilder};
pub use request::{
    Completion, Constraint, FinishReason, Message, Prompt, Request, Role, Sampling, TokenLogprob, Usage,
};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use scripted::ScriptedModel;
pub use stream::TokenStream;

use crate::privacy::{PiiKind, Privacy};
use crate::run::{RedactionEvent, RunContext, RunEvent};
use crate::{Error, Result};

/// Calls `model` within a run: the run's [`Privacy`] policy decides what may reach a remote model.
///
/// Local models are called as they are. For a remote model, `LocalOnly` refuses the call before anything is
/// sent ([`Error::PrivacyViolation`]), and `Redact` replaces personal data in the messages with placeholders
/// and restores the original values where they come back in the answer. Specialists, teams and routers call
/// models this way and record each call as a [`ModelCallEvent`](crate::run::ModelCallEvent) (with the kinds
/// and placeholders replaced); a host that calls this directly records its own events, if it wants them.
///
/// # Errors
/// [`Error::PrivacyViolation`], or whatever the model returns.
pub async fn complete_in(model: &dyn LanguageModel, request: Request, ctx: &RunContext) -> Result<Completion> {
    complete_gated(model, request, ctx).await.0
}

/// [`complete_in`], also returning what was redacted (kind and placeholder).
pub(crate) async fn complete_gated(
    model: &dyn LanguageModel,
    request: Request,
    ctx: &RunContext,
) -> (Result<Completion>, Vec<(PiiKind, String)>) {
    if !model.is_remote() {
        return (model.complete(request).await, Vec::new());
    }
    match ctx.privacy() {
        Privacy::LocalOnly => (Err(Error::PrivacyViolation { model: model.name().to_owned() }), Vec::new()),
        Privacy::Redact(redactor) => {
            let mut request = request;
            let redaction = match &mut request.prompt {
                Prompt::Chat(messages) => {
                    let (texts, redaction) =
                        redactor.redact_many(&messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>());
                    for (m, t) in messages.iter_mut().zip(texts) {
                        m.content = t;
                    }
                    redaction
                }
                Prompt::Raw(text) => {
                    let redaction = redactor.redact(text);
                    *text = redaction.text().to_owned();
                    redaction
                }
            };
            let replaced = redaction.replaced();
            let result = model.complete(request).await.map(|mut completion| {
                completion.text = redaction.restore(&completion.text);
                completion
            });
            (result, replaced)
        }
        _ => (model.complete(request).await, Vec::new()),
    }
}

/// Embeds texts within a run, under its [`Privacy`] policy (as [`complete_in`]; redacted texts are embedded
/// with their placeholders).
///
/// # Errors
/// [`Error::PrivacyViolation`], or whatever the model returns.
pub async fn embed_in(model: &dyn LanguageModel, texts: &[String], ctx: &RunContext) -> Result<Vec<Vec<f32>>> {
    if !model.is_remote() {
        return model.embed(texts).await;
    }
    match ctx.privacy() {
        Privacy::LocalOnly => Err(Error::PrivacyViolation { model: model.name().to_owned() }),
        Privacy::Redact(redactor) => {
            let (texts, redaction) = redactor.redact_many(texts);
            if !redaction.replacements().is_empty() {
                ctx.record(RunEvent::Redaction(RedactionEvent {
                    ids: ctx.ids(),
                    model: model.name().to_owned(),
                    replaced: redaction.replaced(),
                }));
            }
            model.embed(&texts).await
        }
        _ => model.embed(texts).await,
    }
}

/// A language model: local (llama.cpp) or, in later features, remote.
///
/// The trait is object-safe: hosts hold models as `Arc<dyn LanguageModel>`. Every method is asynchronous and
/// never blocks the calling executor.
///
/// ```no_run
/// use std::sync::Arc;
/// use slm_agents::model::{LanguageModel, LlamaModel, Message, Request};
///
/// # async fn demo() -> slm_agents::Result<()> {
/// let model: Arc<dyn LanguageModel> =
///     Arc::new(LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").load()?);
/// let reply = model.complete(Request::chat([Message::user("Hello!")]).with_max_tokens(32)).await?;
/// println!("{}: {}", model.name(), reply.text);
/// let vectors = model.embed(&["a flight to Paris".to_string()]).await?;
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait LanguageModel: Send + Sync {
    /// A short, human-readable name (for logs and reports), e.g. the GGUF file stem.
    fn name(&self) -> &str;

    /// Whether calls send data off the device (the run's [`Privacy`] policy applies
    /// to such models; see [`complete_in`]).
    fn is_remote(&self) -> bool {
        false
    }

    /// Generates a full completion.
    ///
    /// Dropping the returned future cancels the generation.
    async fn complete(&self, request: Request) -> Result<Completion>;

    /// Generates a completion as a stream of text pieces.
    ///
    /// Dropping the stream cancels the generation. After the stream ends,
    /// [`TokenStream::completion`] holds the whole completion and its usage.
    fn stream(&self, request: Request) -> TokenStream;

    /// Embeds each text into one vector (mean pooling over its tokens).
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

#[async_trait::async_trait]
impl<M: LanguageModel + ?Sized> LanguageModel for std::sync::Arc<M> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn is_remote(&self) -> bool {
        (**self).is_remote()
    }
    async fn complete(&self, request: Request) -> Result<Completion> {
        (**self).complete(request).await
    }
    fn stream(&self, request: Request) -> TokenStream {
        (**self).stream(request)
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).embed(texts).await
    }
}
