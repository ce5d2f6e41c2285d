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
    pub(super) fast_forward: bool,
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

    /// Turns fast-forward on or off (default off). On, the tokens a grammar leaves no choice about (a tool
    /// call's braces and keys, the only tool name left, the rest of an enum value) are decoded together in
    /// one step instead of one step each, so a constrained output costs fewer decode steps than free text
    /// (about 0.3x the steps of a tool call, 1.15x the tokens/s of free text, measured on SmolLM2-135M).
    /// Forced tokens are split by the model's own tokenizer, as they would be in any text it reads; left to
    /// itself under the grammar, a model sometimes splits them otherwise, and what it writes next can change:
    /// on SmolLM2-135M, BFCL's simple_python development split scored 45% with it and 49% without. So it is
    /// off unless set: turn it on where speed matters, after checking your task's accuracy with the `eval`
    /// module. It works with byte-level BPE vocabularies (SmolLM2, Qwen, Llama 3); SentencePiece ones (Gemma)
    /// decode every token. Requests that ask for log-probabilities are never fast-forwarded.
    pub fn fast_forward(mut self, on: bool) -> Self {
        self.fast_forward = on;
        self
    }

    /// Whether a lane with several threads goes on with fewer while other processes want the cores (default
    /// on; Linux). llama.cpp's threads wait for each other by spinning, so with more runnable threads than
    /// cores one thread switched out stalls the rest: on 2 cores beside one busy process, 2-thread decoding
    /// fell by 100x, while one thread kept its speed. The lane samples the machine's running threads while
    /// it decodes (every 50 ms, `/proc/loadavg`) and, when the others leave it fewer cores than threads,
    /// moves to a context with fewer (the requests in flight are decoded into it again, and cached prefixes
    /// are lost); back to all its threads once the cores are free. Off: threads stay as set.
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
            fast_forward: false,
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
