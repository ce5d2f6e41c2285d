//! Requests to a language model and what comes back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::privacy::{PiiKind, Redaction};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person (or the host code) asking.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, fed back to the model.
    Tool,
}

impl Role {
    /// The role's name as chat templates expect it (`"system"`, `"user"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What it says.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// A tool-result message.
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new(Role::Tool, content)
    }
}

/// What the model continues from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Chat messages, rendered with the model's own chat template.
    Chat(Vec<Message>),
    /// Raw text, tokenized as it is (works for base models without a chat template).
    Raw(String),
}

impl Prompt {
    /// The texts a model would be sent, to redact in place (message contents, or the raw prompt).
    pub(crate) fn texts_mut(&mut self) -> Vec<&mut String> {
        match self {
            Prompt::Chat(messages) => messages.iter_mut().map(|m| &mut m.content).collect(),
            Prompt::Raw(text) => vec![text],
        }
    }
}

/// How the next token is picked.
///
/// The default is greedy decoding: the most likely token at every step. It repeats exactly for the same model,
/// prompt, thread count and batch layout, but not across them: llama.cpp adds floating-point numbers in an order
/// that depends on the threads and on which tokens share a batch, and where two tokens are nearly tied the
/// choice can flip (seen on some prompts between 1 and 2 threads). A prompt decoded in full and one whose prefix
/// came from the cache differ the same way, and so can a token confirmed from a fast-forward draft
/// ([`LlamaModelBuilder::fast_forward`](crate::model::LlamaModelBuilder::fast_forward)), whose logits come from
/// a batch of several tokens.
/// A lane that changes its threads under CPU contention changes this too. A seeded sampler has the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Softmax temperature; `0.0` means greedy (always the most likely token).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability adds up to `top_p` (`1.0` = off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens before sampling (`0` = off).
    pub top_k: u32,
    /// Seed of the random generator; the same seed and request give the same output (on the same threads and
    /// batch layout, as for greedy decoding).
    pub seed: u64,
    /// Break loops (default on): when the generated tokens end in a short cycle repeated at least three times
    /// (16 tokens or more: the same word or sentence again and again, a string like `"Apex_Apex_Apex_"`), the
    /// token that would start the cycle once more is ruled out for that step, so the model goes on differently
    /// (under a grammar it usually closes the string). Small models fall into such loops and stay there until
    /// the token limit. Local models only; remote servers sample their own way.
    #[serde(default = "yes")]
    pub break_loops: bool,
}

fn yes() -> bool {
    true
}

impl Default for Sampling {
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampling {
    /// Greedy decoding: always the most likely token.
    pub const fn greedy() -> Self {
        Self { temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0, break_loops: true }
    }

    /// Random sampling at the given temperature, with `top_k = 40`, `top_p = 0.95` and seed 0.
    pub const fn temperature(temperature: f32) -> Self {
        Self { temperature, top_p: 0.95, top_k: 40, seed: 0, break_loops: true }
    }

    /// Sets nucleus sampling's probability mass.
    #[must_use]
    pub const fn with_top_p(mut self, top_p: f32) -> Self {
        self.top_p = top_p;
        self
    }

    /// Sets how many of the most likely tokens are kept (`0` = all).
    #[must_use]
    pub const fn with_top_k(mut self, top_k: u32) -> Self {
        self.top_k = top_k;
        self
    }

    /// Sets the random seed.
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Turns loop breaking on or off (see [`break_loops`](Self::break_loops)).
    #[must_use]
    pub const fn with_break_loops(mut self, on: bool) -> Self {
        self.break_loops = on;
        self
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    pub(crate) fn check(&self) -> crate::Result<()> {
        let bad = |reason: String| Err(crate::Error::InvalidRequest { reason });
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature must be finite and >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }
}

/// A decoding constraint: the model can only produce text that matches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Constraint {
    /// A JSON document valid under this JSON Schema.
    JsonSchema(serde_json::Value),
    /// Text matching this regular expression (whole output).
    Regex(String),
}

/// A request to a [`LanguageModel`](super::LanguageModel).
///
/// ```
/// use slm_agents::model::{Message, Request, Sampling};
///
/// let request = Request::chat([Message::user("Name three colours.")])
///     .with_max_tokens(32)
///     .with_stop(["\n\n"])
///     .with_sampling(Sampling::temperature(0.7).with_seed(42));
/// assert_eq!(request.max_tokens, 32);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Request {
    /// What the model continues from.
    pub prompt: Prompt,
    /// How tokens are picked.
    pub sampling: Sampling,
    /// The most tokens to generate.
    pub max_tokens: u32,
    /// Generation stops before the first occurrence of any of these strings (which are not included).
    pub stop: Vec<String>,
    /// An optional constraint on what may be generated.
    pub constraint: Option<Constraint>,
    /// Report the log-probability of each generated token (and the most likely alternatives). Under a
    /// constraint, probabilities are over the tokens the constraint allows.
    pub logprobs: bool,
}

impl Request {
    /// The default token limit of a request.
    pub const DEFAULT_MAX_TOKENS: u32 = 256;

    /// A chat request.
    pub fn chat(messages: impl IntoIterator<Item = Message>) -> Self {
        Self::new(Prompt::Chat(messages.into_iter().collect()))
    }

    /// A raw-prompt request: the text is tokenized as it is, no template applied.
    pub fn raw(prompt: impl Into<String>) -> Self {
        Self::new(Prompt::Raw(prompt.into()))
    }

    fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            sampling: Sampling::greedy(),
            max_tokens: Self::DEFAULT_MAX_TOKENS,
            stop: Vec::new(),
            constraint: None,
            logprobs: false,
        }
    }

    /// Sets the sampling settings.
    #[must_use]
    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// Sets the token limit.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets the stop strings.
    #[must_use]
    pub fn with_stop<S: Into<String>>(mut self, stop: impl IntoIterator<Item = S>) -> Self {
        self.stop = stop.into_iter().map(Into::into).collect();
        self
    }

    /// Asks for the log-probability of each generated token in [`Completion::logprobs`].
    #[must_use]
    pub fn with_logprobs(mut self) -> Self {
        self.logprobs = true;
        self
    }

    /// Sets a decoding constraint.
    #[must_use]
    pub fn with_constraint(mut self, constraint: Constraint) -> Self {
        self.constraint = Some(constraint);
        self
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FinishReason {
    /// The model emitted its end-of-generation token, or a constraint was complete.
    EndOfText,
    /// A stop string was generated.
    Stop,
    /// The token limit was reached.
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

/// Token counts and timings of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt, cached ones included.
    pub prompt_tokens: usize,
    /// Prompt tokens whose state was reused from an earlier request (not recomputed).
    pub cached_prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Of the tokens generated, those a grammar forced that were decoded together with the token before them
    /// rather than each in a step of its own: confirmed from a draft, or forced ([`FastForward`]).
    /// A generation took `completion_tokens - forced_tokens` decode steps.
    ///
    /// [`FastForward`]: crate::model::FastForward
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forced_tokens: usize,
    /// Time from submitting the request to the first generated token.
    pub time_to_first_token: Duration,
    /// Time from submitting the request to its end.
    pub total_time: Duration,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Usage {
    /// Generated tokens per second over the decode phase (after the first token).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let decode = self.total_time.saturating_sub(self.time_to_first_token).as_secs_f64();
        if self.completion_tokens <= 1 || decode <= 0.0 {
            return 0.0;
        }
        (self.completion_tokens - 1) as f64 / decode
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated text (stop strings removed).
    pub text: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Token counts and timings.
    pub usage: Usage,
    /// Per generated token, when the request asked for them ([`Request::with_logprobs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Personal data a remote model replaced before sending the request (kind and placeholder, never the
    /// value); the text has the original values back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redactions: Vec<(PiiKind, String)>,
}

impl Completion {
    /// The completion with the values a redaction replaced put back, and what was replaced added to its
    /// record (unchanged without a redaction).
    pub(crate) fn restored(mut self, redaction: Option<&Redaction>) -> Self {
        if let Some(r) = redaction {
            self.text = r.restore(&self.text);
            self.redactions.extend(r.replaced());
        }
        self
    }
}

/// The log-probability of one generated token, with the most likely alternatives at that step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural log-probability.
    pub logprob: f32,
    /// Up to five most likely tokens at that step (the chosen one included), most likely first.
    pub top: Vec<(String, f32)>,
}
