//! The public handle of a loaded model.

use std::path::Path;

use super::native::{self, Core};
use super::LlamaModelBuilder;
use crate::model::{Completion, LanguageModel, Message, Request, TokenStream};
use crate::Result;

/// A local GGUF model, run in-process by llama.cpp on worker threads of its own.
///
/// `LlamaModel` is a cheap handle: clone it freely and share it between tasks and specialists; all clones use
/// one loaded copy of the weights and the same workers. Requests from many tasks are decoded together in
/// batches. When the last handle is dropped, the workers finish the requests still in flight and stop.
///
/// Nothing runs on the caller's task but sending the request and waiting for the answer: the model's desk
/// thread renders the chat template, tokenizes and compiles the grammar, and a lane's worker thread decodes.
///
/// ```no_run
/// use slm_agents::model::{LanguageModel, LlamaModel, Message, Request};
///
/// # async fn demo() -> slm_agents::Result<()> {
/// let model = LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").threads(2).load()?;
/// let answer = model.complete(Request::chat([Message::user("What is the capital of France?")])).await?;
/// println!("{} ({} tokens)", answer.text, answer.usage.completion_tokens);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LlamaModel {
    core: Core,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("name", &self.core.name())
            .field("path", &self.core.path())
            .field("architecture", &self.core.architecture())
            .field("threads", &self.core.threads())
            .field("lanes", &self.core.lanes())
            .field("adapter", &self.core.adapter())
            .field("slots", &self.core.slots())
            .field("batch_requests", &self.core.batch_requests())
            .field("context_size", &self.core.context_size())
            .finish_non_exhaustive()
    }
}

impl LlamaModel {
    pub(super) fn from_core(core: Core) -> Self {
        Self { core }
    }

    /// Starts building a model from a GGUF file.
    pub fn builder(path: impl AsRef<Path>) -> LlamaModelBuilder {
        LlamaModelBuilder::new(path.as_ref())
    }

    /// Sends llama.cpp's own log lines to `tracing` (target `llama-cpp-2`) instead of dropping them.
    ///
    /// llama.cpp is silent by default. The choice is process-wide and fixed when the first model loads: call
    /// this before that. Returns `false` if it came too late to take effect.
    pub fn enable_native_logs() -> bool {
        native::enable_native_logs()
    }

    /// The path the model was loaded from.
    pub fn path(&self) -> &Path {
        self.core.path()
    }

    /// The model architecture named in the GGUF file (`llama`, `gemma3`, ...).
    pub fn architecture(&self) -> &str {
        self.core.architecture()
    }

    /// Whether the GGUF file has a chat template (otherwise only raw prompts work).
    pub fn has_chat_template(&self) -> bool {
        self.core.has_chat_template()
    }

    /// The number of CPU threads the model uses.
    pub fn threads(&self) -> usize {
        self.core.threads()
    }

    /// How many lanes (worker threads with their own context) this handle's requests are spread over.
    pub fn lanes(&self) -> usize {
        self.core.lanes()
    }

    /// A handle whose requests run with a LoRA adapter applied at `scale`.
    ///
    /// `adapter` is the name given to [`LlamaModelBuilder::adapter`], or the adapter's file path. The first
    /// call for an (adapter, scale) pair starts a lane for it: a worker with its own context over the shared
    /// weights (llama.cpp applies adapters to a whole context). Later calls reuse that lane.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`](crate::Error::InvalidSetting) for an adapter that was not loaded with the
    /// model or a scale that is not finite; [`Error::Backend`](crate::Error::Backend) if the lane's context
    /// cannot be created.
    pub fn with_adapter(&self, adapter: &str, scale: f32) -> Result<LlamaModel> {
        self.core.with_adapter(adapter, scale).map(Self::from_core)
    }

    /// The adapter this handle applies (`name@scale`), if any.
    pub fn adapter(&self) -> Option<&str> {
        self.core.adapter()
    }

    /// How many sequences each lane keeps (see [`LlamaModelBuilder::slots`]).
    pub fn slots(&self) -> usize {
        self.core.slots()
    }

    /// How many requests one lane decodes together.
    pub fn batch_requests(&self) -> usize {
        self.core.batch_requests()
    }

    /// Requests submitted and not yet finished: being prepared, queued, prefilling or generating.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// The context window of one request in tokens (prompt plus output).
    pub fn context_size(&self) -> usize {
        self.core.context_size()
    }

    /// Renders chat messages with the model's chat template, ready for generation.
    ///
    /// # Errors
    /// [`Error::NoChatTemplate`](crate::Error::NoChatTemplate) or [`Error::Template`](crate::Error::Template).
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        self.core.render_chat(messages)
    }

    /// As [`complete`](LanguageModel::complete), but fails at once with [`Error::Busy`](crate::Error::Busy)
    /// instead of waiting when the model is full: as many requests in flight as its lanes decode at once plus
    /// its queue ([`LlamaModelBuilder::queue_size`]). For servers that embed the crate: answer "busy" (HTTP
    /// 503 with Retry-After) rather than let callers pile up.
    ///
    /// ```no_run
    /// # async fn demo(model: &slm_agents::model::LlamaModel) -> slm_agents::Result<()> {
    /// use slm_agents::model::{Message, Request};
    /// use slm_agents::Error;
    ///
    /// match model.try_complete(Request::chat([Message::user("Hi")])).await {
    ///     Ok(answer) => println!("{}", answer.text),
    ///     Err(Error::Busy { .. }) => println!("busy: try again shortly"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Busy`](crate::Error::Busy), or any error of [`complete`](LanguageModel::complete).
    pub async fn try_complete(&self, request: Request) -> Result<Completion> {
        self.core.try_complete(request).await
    }

    /// Counts the tokens of a text as the model would see it in a raw prompt.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.core.count_tokens(text)
    }
}

#[async_trait::async_trait]
impl LanguageModel for LlamaModel {
    fn name(&self) -> &str {
        self.core.name()
    }

    fn provider(&self) -> &str {
        "llama.cpp"
    }

    fn streams_tokens(&self) -> bool {
        true
    }

    async fn complete(&self, request: Request) -> Result<Completion> {
        self.core.complete(request).await
    }

    fn stream(&self, request: Request) -> TokenStream {
        self.core.stream(request)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.core.embed(texts).await
    }
}
