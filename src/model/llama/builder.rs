//! The settings of a local model, checked before anything is loaded.

use std::path::{Path, PathBuf};

use super::{native, LlamaModel};
use crate::{Error, Result};

/// Builds a [`LlamaModel`]; from [`LlamaModel::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `load` is called"]
pub struct LlamaModelBuilder {
    pub(super) path: PathBuf,
    pub(super) name: Option<String>,
    pub(super) threads: Option<usize>,
    pub(super) lanes: usize,
    pub(super) slots: usize,
    pub(super) batch_requests: Option<usize>,
    pub(super) prefix_cache: bool,
    pub(super) fast_forward: FastForward,
    pub(super) adapt_threads: bool,
    pub(super) context: usize,
    pub(super) batch: usize,
    pub(super) queue: usize,
    pub(super) adapters: Vec<(String, PathBuf)>,
    pub(super) chat_template: Option<String>,
}

impl LlamaModelBuilder {
    /// Sets the name used in logs and reports (default: the file stem).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the number of CPU threads llama.cpp uses (default: the machine's available parallelism).
    ///
    /// Use 1 when several models run side by side on a small machine: competing threads slow decoding down far
    /// more than they add.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Sets how many lanes decode in parallel (default 1): each lane is a worker thread with its own llama.cpp
    /// context over the shared weights, and gets `threads / lanes` of the threads.
    ///
    /// On small CPUs several single-thread lanes serve concurrent requests faster than one lane with all threads
    /// (measured on 2 cores with SmolLM2-135M: 4 concurrent requests ran about 1.6x faster on 2 lanes of 1
    /// thread than one after the other on 1 lane of 2 threads, against about 1.25x when batched in that one
    /// lane), while one request alone runs about 12% slower on 1 thread than on 2. Use lanes for teams of
    /// specialists that run in parallel; keep 1 for a single conversation. Each lane has its own KV cache.
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes;
        self
    }

    /// Sets how many sequences each lane keeps (default 4). Each slot has its own context window and keeps the
    /// KV cells of its last prompt, so a later request with the same prefix (a specialist's instructions) only
    /// decodes the rest: more slots cache more specialists.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// Sets how many requests one lane decodes together in a batch (at most `slots`).
    ///
    /// Default: all slots when a lane has two or more threads (batching 4 requests gave about 1.25x the
    /// throughput of running them one by one on 2 threads), and 1 when a lane has a single thread (batching gave
    /// 0.9x there: one thread is compute-bound). Requests beyond this wait in the lane's queue.
    pub fn batch_requests(mut self, requests: usize) -> Self {
        self.batch_requests = Some(requests);
        self
    }

    /// Turns the prefix cache on or off (default on). Off, every request decodes its whole prompt, as if no
    /// earlier request had shared its beginning: useful only to measure what the cache saves.
    pub fn prefix_cache(mut self, on: bool) -> Self {
        self.prefix_cache = on;
        self
    }

    /// Sets how the tokens a grammar forces are decoded: [`FastForward::Off`] (the default),
    /// [`FastForward::Confirmed`] or [`FastForward::Forced`]; `true` means `Confirmed`, `false` `Off`. See
    /// [`FastForward`] for what each does and costs.
    pub fn fast_forward(mut self, mode: impl Into<FastForward>) -> Self {
        self.fast_forward = mode.into();
        self
    }

    /// Whether a lane with several threads goes on with fewer while other processes want the cores (default
    /// on; Linux). llama.cpp's threads wait for each other by spinning, so with more runnable threads than
    /// cores one thread switched out stalls the rest: on 2 cores beside one busy process, 2-thread decoding
    /// fell by 100x, while one thread kept its speed. The lane samples the machine's running threads while
    /// it decodes (`/proc/loadavg`, over 400 ms) and, when others that are runnable in at least three samples
    /// of four (a busy process; not the host's short bursts) leave it fewer cores than threads, moves to a
    /// context with fewer, copying each sequence's KV cells into it (the requests in flight and the cached
    /// prefixes go on where they were; about 75 ms with 4 slots of 2048 tokens, most of it making the
    /// context); back to all its threads once the cores are free, at most one switch a second. Off: threads
    /// stay as set.
    pub fn adapt_threads(mut self, on: bool) -> Self {
        self.adapt_threads = on;
        self
    }

    /// Sets the context window of each slot in tokens: prompt plus generated text (default 2048).
    pub fn context_size(mut self, tokens: usize) -> Self {
        self.context = tokens;
        self
    }

    /// Sets the most tokens decoded in one step (default 512).
    pub fn batch_size(mut self, tokens: usize) -> Self {
        self.batch = tokens;
        self
    }

    /// Sets how many requests may wait for a free slot before callers wait to submit (default 64), or, with
    /// [`LlamaModel::try_complete`], are told the model is busy.
    pub fn queue_size(mut self, requests: usize) -> Self {
        self.queue = requests;
        self
    }

    /// Loads a LoRA adapter (a GGUF adapter file made for this model) with the model, under `name`.
    ///
    /// llama.cpp loads adapters into the model before any context exists, so they are declared here; a handle
    /// that uses one comes from [`LlamaModel::with_adapter`]. The weights stay shared: each adapter in use gets
    /// its own lane (a context with the adapter applied) over the same loaded model.
    pub fn adapter(mut self, name: impl Into<String>, path: impl AsRef<Path>) -> Self {
        self.adapters.push((name.into(), path.as_ref().to_owned()));
        self
    }

    /// Sets the chat template (Jinja source, as Hugging Face writes them) used instead of the file's own
    /// `tokenizer.chat_template`: for base models that ship none, or to change how roles are rendered. It is
    /// rendered with `messages`, `add_generation_prompt`, `bos_token` and `eos_token`, like the file's.
    ///
    /// ```no_run
    /// use slm_agents::model::LlamaModel;
    ///
    /// // Gemma's turn markers, with system and tool messages given as user turns.
    /// let gemma = LlamaModel::builder("models/gemma-3-270m-Q4_K_M.gguf")
    ///     .chat_template(
    ///         "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n\
    ///          {{ m.content | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
    ///     )
    ///     .load()?;
    /// # Ok::<(), slm_agents::Error>(())
    /// ```
    pub fn chat_template(mut self, source: impl Into<String>) -> Self {
        self.chat_template = Some(source.into());
        self
    }

    /// Loads the model and starts its worker thread.
    ///
    /// This blocks while the file is read (well under a second for small models); in async code, call it once
    /// at start-up or inside `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::ModelFile`] if the file cannot be read; [`Error::InvalidGguf`] if it is not a well-formed GGUF
    /// file (checked before llama.cpp sees it); [`Error::UnsupportedArchitecture`] or [`Error::ModelLoad`] if
    /// llama.cpp refuses it; [`Error::InvalidSetting`] for out-of-range settings; [`Error::Backend`] if the
    /// context cannot be created.
    pub fn load(self) -> Result<LlamaModel> {
        self.check()?;
        native::Core::load(self).map(LlamaModel::from_core)
    }

    /// The threads to use: the setting, or the machine's available parallelism.
    pub(super) fn resolved_threads(&self) -> usize {
        match self.threads {
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Checks the settings that need no file.
    fn check(&self) -> Result<()> {
        check_range("threads", self.resolved_threads(), 1, 1024)?;
        check_range("slots", self.slots, 1, 256)?;
        check_range("lanes", self.lanes, 1, 64)?;
        check_range("context_size", self.context, 16, 1 << 20)?;
        check_range("batch_size", self.batch, 1, 1 << 16)?;
        check_range("queue_size", self.queue, 1, 1 << 20)?;
        if self.batch < self.slots {
            return Err(Error::InvalidSetting {
                setting: "batch_size",
                reason: format!(
                    "{} is smaller than slots ({}): each step decodes one token per slot",
                    self.batch, self.slots
                ),
            });
        }
        if let Some(active) = self.batch_requests {
            if active == 0 || active > self.slots {
                return Err(Error::InvalidSetting {
                    setting: "batch_requests",
                    reason: format!("{active} is outside 1..=slots ({})", self.slots),
                });
            }
        }
        Ok(())
    }

    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            name: None,
            threads: None,
            lanes: 1,
            slots: 4,
            batch_requests: None,
            prefix_cache: true,
            fast_forward: FastForward::Off,
            adapt_threads: true,
            adapters: Vec::new(),
            context: 2048,
            batch: 512,
            queue: 64,
            chat_template: None,
        }
    }
}

fn check_range(setting: &'static str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min || value > max {
        return Err(Error::InvalidSetting { setting, reason: format!("{value} is outside {min}..={max}") });
    }
    Ok(())
}

/// How a [`LlamaModel`] decodes the text a grammar leaves no choice about: a tool call's braces and keys, the
/// rest of the only tool name left, the tail of an enum value. Set with [`LlamaModelBuilder::fast_forward`].
///
/// Measured on SmolLM2-135M on 2 cores (`perf_report`, the trip planner's `--compare`): a JSON object or tool
/// call is about half forced text, and
///
/// | mode | decode steps of a tool call | constrained tokens/s over free text | trip planner, first request | outputs |
/// |---|---|---|---|---|
/// | `Off` | 1x | 1.0x | 1x | the model's own |
/// | `Confirmed` | 0.3x | 0.88–0.9x | 0.99–1.09x | the same as `Off` |
/// | `Forced` | 0.3x | 1.13–1.14x | 0.82–0.84x | some differ |
///
/// On such a small model decoding on one or two threads, a token costs about the same alone or in a batch,
/// and the logits of a draft token (a 49k-token vocabulary) cost a third of a token's work, so `Confirmed`
/// saves steps but not time there. It pays where a step costs more than the tokens in it: larger models whose
/// weights are read once per step, more threads, GPU back ends. Where two tokens are nearly tied, rounding
/// can still make `Confirmed` differ from `Off`, as between batch layouts ([`Sampling`]): a draft token's
/// logits come from a batch of several tokens, which some quantized kernels (Gemma's Q4_K) round differently
/// from one token, and with several requests batched the KV cells are laid out differently.
///
/// Drafts are split the way the model's tokenizer splits text: llama.cpp's own tokenizer for byte-level BPE
/// vocabularies (`tokenizer.ggml.model = gpt2`: SmolLM2, Qwen, Llama 3). SentencePiece vocabularies (Gemma,
/// Llama 2) add a leading space to every fragment they tokenize, so `Confirmed` drafts them greedily over the
/// vocabulary (confirmed less often) and `Forced` decodes every token there, as `Off`.
///
/// A mode also parses from its lower-case name, as command-line options spell it:
///
/// ```
/// use slm_agents::model::FastForward;
///
/// assert_eq!("confirmed".parse::<FastForward>().unwrap(), FastForward::Confirmed);
/// assert!("on".parse::<FastForward>().is_err());
/// ```
///
/// [`Sampling`]: crate::model::Sampling
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FastForward {
    /// Every token is decoded in a step of its own (the default).
    #[default]
    Off,
    /// The forced text is decoded as a draft in the same step as the token before it, with logits at each
    /// position. The model's pick at each draft position, under the grammar and the request's sampling (the
    /// same random draws), confirms the draft token or replaces it, and the rest of the draft is dropped: a
    /// request generates what it would with `Off`, in fewer steps. Log-probabilities work as with `Off`.
    Confirmed,
    /// llguidance forces the forced text's tokens, as the tokenizer splits it, and they are decoded with the
    /// token before them without logits of their own: the fastest, but the model, left to itself, sometimes
    /// splits the same text into other tokens and writes something else next (on BFCL's simple_python
    /// development split, 45.0% against 49.0% with `Off`). Check a task's accuracy with
    /// [`eval`](crate::eval) before using it. Requests that ask for log-probabilities decode every token.
    Forced,
}

impl From<bool> for FastForward {
    /// `true` is [`FastForward::Confirmed`], `false` [`FastForward::Off`].
    fn from(on: bool) -> Self {
        if on {
            FastForward::Confirmed
        } else {
            FastForward::Off
        }
    }
}

impl std::str::FromStr for FastForward {
    type Err = Error;

    /// `off`, `confirmed` or `forced` (as command-line options spell them).
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "off" => Ok(FastForward::Off),
            "confirmed" => Ok(FastForward::Confirmed),
            "forced" => Ok(FastForward::Forced),
            _ => Err(Error::InvalidSetting {
                setting: "fast_forward",
                reason: format!("`{text}`: off, confirmed or forced"),
            }),
        }
    }
}
