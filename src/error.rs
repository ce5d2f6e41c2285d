//! The crate's one error type.

use std::path::PathBuf;

/// A `Result` whose error is the crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `slm-agents`.
///
/// Each variant carries the context a host needs to act on it (which file, which type, how many tokens);
/// underlying causes are reachable through [`std::error::Error::source`] and are not repeated in the message.
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

    /// The model's chat template failed to render the messages.
    #[error("the chat template of model {model} failed to render")]
    Template {
        /// The model's name.
        model: String,
        /// The template engine's error.
        #[source]
        source: minijinja::Error,
    },

    /// The prompt does not fit in the context window.
    #[error("prompt of {prompt_tokens} tokens does not fit the context of {context_tokens} tokens")]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens the context (one slot) can hold, minus one for the first generated token.
        context_tokens: usize,
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
    #[error("output for `{type_name}` was cut off after {completion_tokens} tokens")]
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

    /// A remote model could not be reached or answered wrongly (after retries where they apply).
    #[error("remote model: {reason}")]
    Remote {
        /// What went wrong.
        reason: String,
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
}
