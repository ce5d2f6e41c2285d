//! The language-model layer: one trait for every model, local or remote.
//!
//! A [`LanguageModel`] turns a [`Request`] (chat messages or a raw prompt, sampling settings, stop strings, a
//! token limit and an optional decoding [`Constraint`]) into a [`Completion`] with [`Usage`] figures, or into a
//! [`TokenStream`]. [`LlamaModel`] runs a GGUF file in-process through llama.cpp.
//!
//! Typed output on top of this layer lives in [`crate::structured`].
//!
#![doc = include_str!("../../docs/models.md")]

#[cfg(feature = "hf-hub")]
mod hf;
#[cfg(any(feature = "llama", docsrs))]
mod llama;
#[cfg(feature = "remote")]
mod remote;
mod request;
#[cfg(feature = "test-util")]
mod scripted;
mod stream;

#[cfg(feature = "hf-hub")]
#[cfg_attr(docsrs, doc(cfg(feature = "hf-hub")))]
pub use hf::{DownloadProgress, HfFile};
#[cfg(any(feature = "llama", docsrs))]
#[cfg_attr(docsrs, doc(cfg(feature = "llama")))]
pub use llama::{FastForward, LlamaModel, LlamaModelBuilder};
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use remote::{RemoteModel, RemoteModelBuilder};
pub use request::{
    Completion, Constraint, FinishReason, Message, Prompt, Request, Role, Sampling, TokenLogprob, Usage,
};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use scripted::ScriptedModel;
pub(crate) use stream::StreamEnd;
pub use stream::TokenStream;

use crate::Result;

/// A language model: local (llama.cpp) or remote (an OpenAI-compatible endpoint).
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

    /// Whether calls send data off the device. Within a run, [`RunContext`](crate::run::RunContext) applies
    /// the run's [`Privacy`](crate::privacy::Privacy) policy before it calls a model that says it is remote
    /// (refusing, or redacting and restoring); a remote model may apply a policy of its own as well (as
    /// [`RemoteModel`] does, with
    /// [`Privacy::apply`](crate::privacy::Privacy::apply)).
    fn is_remote(&self) -> bool {
        false
    }

    /// Who runs the model, as the OpenTelemetry GenAI conventions' `gen_ai.provider.name` puts it on the
    /// model's spans: `llama.cpp` for `LlamaModel`, `openai` for an OpenAI-compatible `RemoteModel`. The
    /// default says `openai` for a remote model and `local` otherwise.
    fn provider(&self) -> &str {
        if self.is_remote() {
            "openai"
        } else {
            "local"
        }
    }

    /// Whether [`stream`](Self::stream) gives the same completion as [`complete`](Self::complete), text
    /// pieces as they are generated included. A run streamed as updates
    /// ([`RunStream`](crate::run::RunStream)) streams the calls of such a model, to show its text as it is
    /// written, and makes the calls of any other whole. Default `false`; `LlamaModel` says `true`.
    fn streams_tokens(&self) -> bool {
        false
    }

    /// Generates a full completion.
    ///
    /// Dropping the returned future cancels the generation.
    async fn complete(&self, request: Request) -> Result<Completion>;

    /// Generates a completion as a stream of text pieces.
    ///
    /// Dropping the stream cancels the generation. A model that cannot stream can answer with
    /// [`TokenStream::from_future`] over its `complete`. After the stream ends,
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
    fn provider(&self) -> &str {
        (**self).provider()
    }
    fn streams_tokens(&self) -> bool {
        (**self).streams_tokens()
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
