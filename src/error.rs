//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// A `Result` whose error is the crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `slm-agents`.
///
/// Each variant carries the context a host needs to act on it (which file, which type, how many tokens);
/// underlying causes are reachable through [`std::error::Error::source`] and are not repeated in the message.
///
/// The variants fall into a few groups, given by [`Error::kind`]; hosts usually decide on the group and on
/// the helpers below rather than on single variants:
///
/// | [`ErrorKind`] | variants | what a host does |
/// |---|---|---|
/// | `Load` | `ModelFile`, `InvalidGguf`, `InvalidMetadata`, `UnsupportedArchitecture`, `ModelLoad`, `Adapter`, `NoChatTemplate` | fix the file or pick another model |
/// | `Config` | `InvalidSetting`, `InvalidRequest`, `Schema`, `Graph`, `Unavailable`, `Dataset` | fix the code (or the data file) |
/// | `Generation` | `Template`, `PromptTooLong`, `PromptTooLarge`, `Decode`, `Backend`, `WorkerStopped`, `Busy`, `Training` | shorten the prompt, retry, or restart the model |
/// | `InvalidOutput` | `Validation`, `Deserialize`, `Incomplete` ([`is_invalid_output`](Error::is_invalid_output)) | retry, or escalate to a larger model |
/// | `Orchestration` | `Tool`, `MaxSteps`, `Specialist`, `Plan`, `Node`, `NodeTimeout`, `NodePanicked` | look at the cause: [`root`](Error::root) |
/// | `Remote` | `Remote` ([`RemoteError`]) | retry after [`retry_after`](Error::retry_after), or fall back |
/// | `Privacy` | `PrivacyViolation` | keep the work local |
/// | `Ledger` | `Ledger`, `LedgerLine`, `Export` | fix the file or its folder |
///
/// ```
/// use slm_agents::{Error, ErrorKind};
///
/// let e = Error::Validation { type_name: "Plan".into(), reason: "missing field".into(), output: "{}".into() };
/// assert_eq!(e.kind(), ErrorKind::InvalidOutput);
/// assert!(e.is_invalid_output());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file does not exist or cannot be read.
    #[error("cannot read model file {path}")]
    ModelFile {
        /// The path that was given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a GGUF model, or its header is damaged or truncated.
    ///
    /// Checked in Rust before llama.cpp sees the file, because llama.cpp aborts the process on some malformed
    /// files.
    #[error("{path} is not a valid GGUF model: {reason}")]
    InvalidGguf {
        /// The path that was given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A metadata value of the GGUF file is one llama.cpp cannot run safely (it would abort the process,
    /// hang, or fail on the first request); refused before llama.cpp sees the file.
    #[error("{path}: metadata `{key}` = {value}: {reason}")]
    InvalidMetadata {
        /// The path that was given.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// The value found, as shown to people.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// The GGUF file names a model architecture that this build of llama.cpp does not know.
    #[error("{path}: model architecture `{architecture}` is not supported by this build of llama.cpp")]
    UnsupportedArchitecture {
        /// The path that was given.
        path: PathBuf,
        /// The value of `general.architecture`.
        architecture: String,
    },

    /// llama.cpp refused to load a model whose header looked valid.
    #[error("llama.cpp could not load {path} (architecture `{architecture}`)")]
    ModelLoad {
        /// The path that was given.
        path: PathBuf,
        /// The value of `general.architecture`.
        architecture: String,
    },

    /// A LoRA adapter file cannot be used with the model.
    #[error("LoRA adapter {path}: {reason}")]
    Adapter {
        /// The adapter file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },

    /// A setting given to a builder is out of range.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// llama.cpp failed to set up the backend or a context (usually: not enough memory).
    #[error("llama.cpp failed: {what}")]
    Backend {
        /// What was being done.
        what: String,
    },

    /// A chat request was sent to a model whose GGUF file has no chat template.
    #[error("model {model} has no chat template; send a raw prompt instead")]
    NoChatTemplate {
        /// The model's name.
        model: String,
    },

    /// The model's chat template failed to render the messages (or could not be compiled at load).
    #[error("the chat template of model {model} failed to render")]
    Template {
        /// The model's name.
        model: String,
        /// The template engine's error (its message and, where known, the template line).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The prompt does not fit in the context window.
    #[error("prompt of {prompt_tokens} tokens does not fit the context of {context_tokens} tokens")]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens the context (one slot) can hold, minus one for the first generated token.
        context_tokens: usize,
    },

    /// The prompt's text is far larger than the context window could hold; it was refused before tokenizing.
    #[error("prompt of {bytes} bytes is larger than the context window can hold (at most {limit} bytes)")]
    PromptTooLarge {
        /// Bytes in the prompt (for a chat, as rendered so far).
        bytes: usize,
        /// The most bytes a prompt may have.
        limit: usize,
    },

    /// A request was malformed (for example, an empty prompt or invalid sampling settings).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why it was refused.
        reason: String,
    },

    /// A JSON Schema could not be turned into a decoding constraint.
    #[error("the schema of `{type_name}` cannot be turned into a grammar: {reason}")]
    Schema {
        /// The Rust type (or "constraint" for a hand-written schema).
        type_name: String,
        /// Why not.
        reason: String,
    },

    /// The model's output did not validate against the schema of the requested type.
    #[error("output for `{type_name}` does not match its schema: {reason}")]
    Validation {
        /// The Rust type that was requested.
        type_name: String,
        /// The validation errors, joined.
        reason: String,
        /// The text the model produced.
        output: String,
    },

    /// The model's output validated but could not be deserialized into the Rust type.
    #[error("output for `{type_name}` cannot be deserialized")]
    Deserialize {
        /// The Rust type that was requested.
        type_name: String,
        /// The text the model produced.
        output: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// Generation ended (token limit or context full) before the constrained output was complete.
    #[error(
        "output for `{type_name}` was cut off after {completion_tokens} tokens (raise the token limit, or bound \
         the strings and arrays of its schema)"
    )]
    Incomplete {
        /// The Rust type that was requested.
        type_name: String,
        /// Tokens generated.
        completion_tokens: usize,
        /// The partial text.
        output: String,
    },

    /// llama.cpp failed while decoding a batch.
    #[error("decoding failed: {reason}")]
    Decode {
        /// llama.cpp's error.
        reason: String,
    },

    /// A tool call of a specialist failed (after the failures fed back to the model ran out).
    #[error("specialist `{specialist}`: tool `{tool}` failed")]
    Tool {
        /// The specialist.
        specialist: String,
        /// The tool.
        tool: String,
        /// What went wrong.
        #[source]
        source: crate::tool::ToolError,
    },

    /// A specialist used all its model turns without answering.
    #[error("specialist `{specialist}` did not answer within {steps} steps")]
    MaxSteps {
        /// The specialist.
        specialist: String,
        /// Its step limit.
        steps: usize,
    },

    /// Something failed inside a specialist (a model error, an invalid answer, ...).
    #[error("specialist `{specialist}` failed")]
    Specialist {
        /// The specialist.
        specialist: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// A team's manager wrote a plan that cannot be run (empty, out of order, or no fitting specialist), and
    /// the team has nowhere to escalate.
    #[error("team `{team}`: unusable plan: {reason}")]
    Plan {
        /// The team.
        team: String,
        /// What is wrong with the plan.
        reason: String,
    },

    /// A graph node failed; the cause is the source.
    #[error("graph node `{node}` failed")]
    Node {
        /// The node's name.
        node: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A graph node took longer than its timeout (on its last try).
    #[error("graph node `{node}` did not finish within {timeout:?}")]
    NodeTimeout {
        /// The node's name.
        node: String,
        /// Its timeout.
        timeout: std::time::Duration,
    },

    /// A graph node panicked; the panic was caught.
    #[error("graph node `{node}` panicked: {message}")]
    NodePanicked {
        /// The node's name.
        node: String,
        /// The panic message.
        message: String,
    },

    /// A graph was wired wrongly in a way the compiler cannot see, or its output was skipped.
    #[error("graph: {reason}")]
    Graph {
        /// What is wrong.
        reason: String,
    },

    /// A remote model could not be reached, refused the request or answered wrongly (after retries where
    /// they apply). The [`RemoteError`] says which, with the HTTP status, the server's error code and its
    /// Retry-After where the server gave them.
    #[error("remote model `{model}`: {error}")]
    Remote {
        /// The remote model's name.
        model: String,
        /// What went wrong.
        error: RemoteError,
    },

    /// The run's privacy policy forbids sending this request off the device.
    #[error("privacy policy forbids calling remote model `{model}`")]
    PrivacyViolation {
        /// The remote model's name.
        model: String,
    },

    /// A ledger file cannot be opened, written or read.
    #[error("ledger {path}")]
    Ledger {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A training file of the conversion loop ([`distill::export`](crate::distill)) cannot be written.
    #[error("cannot write {path}")]
    Export {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A model file could not be downloaded from a Hugging Face repository (feature `hf-hub`).
    #[error("cannot download {file} from {repo}: {reason}")]
    Download {
        /// The repository (`owner/name`).
        repo: String,
        /// The file in it.
        file: String,
        /// What went wrong (the server's answer, the connection, the cache directory).
        reason: String,
    },

    /// Fine-tuning failed: the training process ended with an error or crashed, or was cancelled.
    #[error("fine-tuning failed: {reason}")]
    Training {
        /// What happened (the child's exit status and the end of its error output).
        reason: String,
    },

    /// A line of a ledger file is malformed (and is not a torn last line).
    #[error("ledger {path}, line {line}: {reason}")]
    LedgerLine {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// The model's worker thread has stopped (it panicked, or the model was dropped).
    #[error("the model worker has stopped")]
    WorkerStopped,

    /// The model's request queue is full and the request was submitted with a deadline or as a `try_` call
    /// (see [`LlamaModelBuilder::queue_size`](crate::model::LlamaModelBuilder::queue_size)).
    #[error("model {model} is busy: its request queue is full")]
    Busy {
        /// The model's name.
        model: String,
    },

    /// A file of evaluation cases (JSON Lines of [`Case`](crate::eval::Case)s, or a BFCL file) cannot be read or
    /// is malformed.
    #[error("data set {}: {reason}", path.display())]
    Dataset {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number, from 1, where it is one line).
        reason: String,
    },

    /// An MCP server could not be started or reached, or did not answer (feature `mcp`). A failing call of
    /// one of its tools is a [`ToolError`](crate::tool::ToolError) instead, shown to the model.
    #[error("MCP server `{server}`: {reason}")]
    Mcp {
        /// The server's name (or its command or URL).
        server: String,
        /// What went wrong.
        reason: String,
    },

    /// A part of the crate that this build does not include was asked for (a cargo feature is off).
    #[error("{what} needs the cargo feature `{feature}`")]
    Unavailable {
        /// What was asked for.
        what: &'static str,
        /// The feature that provides it.
        feature: &'static str,
    },
}

/// The group an [`Error`] belongs to; from [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A model or adapter file cannot be used.
    Load,
    /// A setting, request, schema or graph is wrong: a bug in the calling code.
    Config,
    /// Generation failed in the engine (prompt too long, decoding, the worker).
    Generation,
    /// The model answered, but the answer is unusable (does not validate, cannot be deserialized, cut off).
    InvalidOutput,
    /// A specialist, team or graph node failed; the cause is in [`source`](std::error::Error::source).
    Orchestration,
    /// A remote model failed.
    Remote,
    /// The privacy policy refused the call.
    Privacy,
    /// A ledger file, or a file made from one, cannot be read or written.
    Ledger,
}

/// An error's message followed by its causes', joined by `": "`: one line for logs and for the model.
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Error {
    /// The group of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::ModelFile { .. }
            | Self::InvalidGguf { .. }
            | Self::InvalidMetadata { .. }
            | Self::UnsupportedArchitecture { .. }
            | Self::ModelLoad { .. }
            | Self::Adapter { .. }
            | Self::NoChatTemplate { .. }
            | Self::Download { .. } => ErrorKind::Load,
            Self::InvalidSetting { .. }
            | Self::InvalidRequest { .. }
            | Self::Schema { .. }
            | Self::Graph { .. }
            | Self::Unavailable { .. }
            | Self::Dataset { .. } => ErrorKind::Config,
            Self::Template { .. }
            | Self::PromptTooLong { .. }
            | Self::PromptTooLarge { .. }
            | Self::Decode { .. }
            | Self::Backend { .. }
            | Self::WorkerStopped
            | Self::Training { .. }
            | Self::Busy { .. } => ErrorKind::Generation,
            Self::Validation { .. } | Self::Deserialize { .. } | Self::Incomplete { .. } => ErrorKind::InvalidOutput,
            Self::Tool { .. }
            | Self::MaxSteps { .. }
            | Self::Specialist { .. }
            | Self::Plan { .. }
            | Self::Node { .. }
            | Self::NodeTimeout { .. }
            | Self::NodePanicked { .. }
            | Self::Mcp { .. } => ErrorKind::Orchestration,
            Self::Remote { .. } => ErrorKind::Remote,
            Self::PrivacyViolation { .. } => ErrorKind::Privacy,
            Self::Ledger { .. } | Self::LedgerLine { .. } | Self::Export { .. } => ErrorKind::Ledger,
        }
    }

    /// The innermost error of the crate's own in a chain of wrappers (`Specialist`, `Node`): the error that
    /// says what really went wrong.
    pub fn root(&self) -> &Error {
        match self {
            Self::Specialist { source, .. } => source.root(),
            Self::Node { source, .. } => source.downcast_ref::<Error>().map_or(self, Error::root),
            _ => self,
        }
    }

    /// Whether a model answered with unusable output: it did not validate, could not be deserialized, was
    /// cut off, or a team's plan could not be run (looked up through wrappers). A larger model, or another
    /// try, may do better: cascades and teams escalate on it.
    pub fn is_invalid_output(&self) -> bool {
        let root = self.root();
        root.kind() == ErrorKind::InvalidOutput || matches!(root, Self::Plan { .. })
    }

    /// Whether trying the same call again later may succeed: a busy queue, a timed-out or rate-limited
    /// remote call, a 5xx answer, a lost connection (looked up through wrappers).
    pub fn is_retryable(&self) -> bool {
        match self.root() {
            Self::Busy { .. } | Self::NodeTimeout { .. } => true,
            Self::Remote { error, .. } => error.is_retryable(),
            _ => false,
        }
    }

    /// How long the server asked to wait before the next try (its Retry-After header), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.root() {
            Self::Remote { error, .. } => error.retry_after,
            _ => None,
        }
    }

    /// The remote failure, if this is one (looked up through wrappers).
    pub fn remote(&self) -> Option<&RemoteError> {
        match self.root() {
            Self::Remote { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What went wrong with a remote model; in [`Error::Remote`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteError {
    /// Which kind of failure.
    pub kind: RemoteErrorKind,
    /// The HTTP status of the last answer, if one came.
    pub status: Option<u16>,
    /// The server's own error code or type (`error.code` or `error.type` of an OpenAI-style error body).
    pub code: Option<String>,
    /// The server's message, or what the client saw.
    pub message: String,
    /// How long the server asked to wait before trying again (Retry-After).
    pub retry_after: Option<Duration>,
}

impl RemoteError {
    /// A failure of this kind with a message.
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> Self {
        Self { kind, status: None, code: None, message: message.into(), retry_after: None }
    }

    /// Sets the HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the server's error code.
    #[must_use]
    pub fn with_code(mut self, code: Option<String>) -> Self {
        self.code = code;
        self
    }

    /// Sets the server's Retry-After.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// Whether trying again later may succeed (connection failures, timeouts, 429 and 5xx answers).
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            RemoteErrorKind::Connect | RemoteErrorKind::Timeout | RemoteErrorKind::RateLimited => true,
            RemoteErrorKind::Status => self.status.is_some_and(|s| s >= 500),
            _ => false,
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.describe())?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if let Some(code) = &self.code {
            write!(f, " [{code}]")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(wait) = self.retry_after {
            write!(f, " (retry after {wait:?})")?;
        }
        Ok(())
    }
}

/// The kinds of [`RemoteError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The server could not be reached (refused, reset, DNS).
    Connect,
    /// The request took longer than the model's timeout.
    Timeout,
    /// 429 Too Many Requests, after the retries.
    RateLimited,
    /// The server refused the request's `response_format` (JSON schema); the model then tries another form.
    ResponseFormatRefused,
    /// Another HTTP error status (4xx, or 5xx after the retries).
    Status,
    /// The server answered with an error object (in a 200 body or in a stream).
    ServerError,
    /// The answer is not what the API promises (not JSON, no choices, an oversized body).
    Malformed,
    /// A stream ended without its terminator: the text is cut off.
    CutOff,
}

impl RemoteErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Connect => "cannot connect",
            Self::Timeout => "timed out",
            Self::RateLimited => "rate limited",
            Self::ResponseFormatRefused => "response format refused",
            Self::Status => "error status",
            Self::ServerError => "server error",
            Self::Malformed => "malformed answer",
            Self::CutOff => "answer cut off",
        }
    }
}
