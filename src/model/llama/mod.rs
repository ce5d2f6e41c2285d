//! Local GGUF models run in-process by llama.cpp.
//!
//! This folder is the only place in the crate that names `llama_cpp_2`; none of its types appear in the public
//! API.

mod engine;
mod gguf;
mod sample;
mod template;
mod text;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use futures::lock::Mutex as AsyncMutex;
use futures::SinkExt;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel as RawModel};
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use self::engine::{EmbedJob, EngineConfig, GenerateJob, Job, LaneShared, LaneView, Sink};
use self::template::ChatTemplate;
use super::stream::TokenStream;
use super::{Completion, Constraint, LanguageModel, Message, Prompt, Request, Role};
use crate::{Error, Result};

static NATIVE_LOGS: AtomicBool = AtomicBool::new(false);
static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
static BACKEND_INIT: Mutex<()> = Mutex::new(());

/// llama.cpp's backend may be initialised once per process: the crate keeps one, created on first use.
fn backend() -> Result<&'static LlamaBackend> {
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    let _guard = BACKEND_INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    let enabled = NATIVE_LOGS.load(Ordering::SeqCst);
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(enabled));
    let backend = LlamaBackend::init().map_err(|e| Error::Backend { what: format!("backend init: {e}") })?;
    Ok(BACKEND.get_or_init(|| backend))
}

/// A local GGUF model, run in-process by llama.cpp on a worker thread of its own.
///
/// `LlamaModel` is a cheap handle: clone it freely and share it between tasks and specialists; all clones use
/// one loaded copy of the weights and one worker. Requests from many tasks are decoded together in batches.
/// When the last handle is dropped, the worker finishes the requests still in flight and stops.
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
    shared: Arc<Shared>,
    /// The lanes this handle sends to: the base lanes, or the lane of one adapter.
    lanes: Arc<[Arc<Lane>]>,
    /// `name@scale` of the adapter this handle applies.
    adapter: Option<String>,
    /// The model's name, with the adapter for adapter handles.
    label: Arc<str>,
}

/// One worker thread with its own context; a model has one or more.
struct Lane {
    /// One sender behind an async lock: a cloned `futures` sender adds a place to the channel each time, so
    /// sharing one keeps the queue bounded.
    jobs: AsyncMutex<mpsc::Sender<Job>>,
    view: Arc<LaneView>,
}

/// A LoRA adapter loaded with the model.
struct Adapter {
    name: String,
    path: PathBuf,
    adapter: Arc<Mutex<LlamaLoraAdapter>>,
}

struct Shared {
    name: String,
    path: PathBuf,
    architecture: String,
    model: Arc<RawModel>,
    template: Option<ChatTemplate>,
    adapters: Vec<Adapter>,
    /// Lanes of (adapter index, scale bits), made on first use.
    adapter_lanes: Mutex<Vec<(usize, u32, Arc<Lane>)>>,
    config: EngineConfig,
    create_lock: Arc<Mutex<()>>,
    backend: &'static LlamaBackend,
    queue: usize,
    threads: usize,
    slots: usize,
    batch_requests: usize,
    slot_context: usize,
    guidance: OnceLock<std::result::Result<ParserFactory, String>>,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("name", &self.shared.name)
            .field("path", &self.shared.path)
            .field("architecture", &self.shared.architecture)
            .field("threads", &self.shared.threads)
            .field("lanes", &self.lanes.len())
            .field("adapter", &self.adapter)
            .field("slots", &self.shared.slots)
            .field("batch_requests", &self.shared.batch_requests)
            .field("slot_context", &self.shared.slot_context)
            .finish_non_exhaustive()
    }
}

/// Builds a [`LlamaModel`]; from [`LlamaModel::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `load` is called"]
pub struct LlamaModelBuilder {
    path: PathBuf,
    name: Option<String>,
    threads: Option<usize>,
    lanes: usize,
    slots: usize,
    batch_requests: Option<usize>,
    prefix_cache: bool,
    context: usize,
    batch: usize,
    queue: usize,
    adapters: Vec<(String, PathBuf)>,
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

    /// Sets how many requests may wait for a free slot before callers wait to submit (default 64).
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
        let threads = match self.threads {
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        check_range("threads", threads, 1, 1024)?;
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

        let info = gguf::inspect(&self.path)?;
        if info.general_type.as_deref() == Some("adapter") {
            return Err(Error::InvalidGguf {
                path: self.path.clone(),
                reason: "this is a LoRA adapter, not a model; load it with LlamaModelBuilder::adapter".into(),
            });
        }
        let name = self.name.clone().unwrap_or_else(|| {
            self.path.file_stem().map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned())
        });
        let backend = backend()?;
        let started = Instant::now();
        let raw = RawModel::load_from_file(backend, &self.path, &LlamaModelParams::default()).map_err(|_| {
            if gguf::is_known_architecture(&info.architecture) {
                Error::ModelLoad { path: self.path.clone(), architecture: info.architecture.clone() }
            } else {
                Error::UnsupportedArchitecture { path: self.path.clone(), architecture: info.architecture.clone() }
            }
        })?;
        let mut raw = raw;
        let mut adapters = Vec::with_capacity(self.adapters.len());
        for (adapter_name, path) in &self.adapters {
            let file = gguf::inspect(path).map_err(|e| match e {
                Error::InvalidGguf { reason, .. } => Error::Adapter { path: path.clone(), reason },
                other => other,
            })?;
            if file.general_type.as_deref() != Some("adapter") {
                return Err(Error::Adapter { path: path.clone(), reason: "the file is not a LoRA adapter".into() });
            }
            if file.architecture != info.architecture {
                return Err(Error::Adapter {
                    path: path.clone(),
                    reason: format!("made for `{}`, not `{}`", file.architecture, info.architecture),
                });
            }
            let adapter = raw.lora_adapter_init(path).map_err(|e| Error::Adapter {
                path: path.clone(),
                reason: format!("llama.cpp refused it ({e}); does it match this model's tensors?"),
            })?;
            adapters.push(Adapter {
                name: adapter_name.clone(),
                path: path.clone(),
                adapter: Arc::new(Mutex::new(adapter)),
            });
        }
        let model = Arc::new(raw);

        let template = match &info.chat_template {
            Some(source) => {
                let vocab = model.vocab();
                let piece = |t: LlamaToken| {
                    if t.0 < 0 {
                        String::new()
                    } else {
                        String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
                    }
                };
                let (bos, eos) = (piece(vocab.bos()), piece(vocab.eos()));
                Some(
                    ChatTemplate::new(source.clone(), bos, eos)
                        .map_err(|source| Error::Template { model: name.clone(), source })?,
                )
            }
            None => None,
        };

        let lane_threads = (threads / self.lanes).max(1);
        let active = match self.batch_requests {
            Some(n) => n,
            None if lane_threads == 1 => 1,
            None => self.slots,
        };
        if active == 0 || active > self.slots {
            return Err(Error::InvalidSetting {
                setting: "batch_requests",
                reason: format!("{active} is outside 1..=slots ({})", self.slots),
            });
        }
        let config = EngineConfig {
            threads: lane_threads as i32,
            slots: self.slots as u32,
            active: active as u32,
            prefix_cache: self.prefix_cache,
            slot_context: self.context as u32,
            batch: self.batch as u32,
            sliding_window: info.sliding_window.is_some(),
        };
        let create_lock = Arc::new(Mutex::new(()));
        let mut lanes = Vec::with_capacity(self.lanes);
        let mut slot_context = 0;
        for i in 0..self.lanes {
            let (tx, rx) = mpsc::channel(self.queue);
            let view = LaneView::new(self.slots);
            let shared = LaneShared {
                backend,
                model: Arc::clone(&model),
                view: Arc::clone(&view),
                create_lock: Arc::clone(&create_lock),
                lora: None,
            };
            // Thread names show in debuggers and `top -H`; Linux keeps 15 bytes.
            let thread = if self.lanes == 1 { format!("slm-{name}") } else { format!("slm{i}-{name}") };
            slot_context = engine::spawn(shared, config.clone(), rx, thread)? as usize;
            lanes.push(Arc::new(Lane { jobs: AsyncMutex::new(tx), view }));
        }
        tracing::info!(
            model = %name,
            architecture = %info.architecture,
            threads,
            lanes = self.lanes,
            slots = self.slots,
            slot_context,
            ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        let lanes: Arc<[Arc<Lane>]> = lanes.into();
        Ok(LlamaModel {
            lanes: Arc::clone(&lanes),
            adapter: None,
            label: Arc::from(name.as_str()),
            shared: Arc::new(Shared {
                name,
                path: self.path,
                architecture: info.architecture,
                model,
                template,
                adapters,
                adapter_lanes: Mutex::new(Vec::new()),
                config,
                create_lock,
                backend,
                queue: self.queue,
                threads,
                slots: self.slots,
                batch_requests: active,
                slot_context,
                guidance: OnceLock::new(),
            }),
        })
    }
}

fn check_range(setting: &'static str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min || value > max {
        return Err(Error::InvalidSetting { setting, reason: format!("{value} is outside {min}..={max}") });
    }
    Ok(())
}

impl LlamaModel {
    /// Starts building a model from a GGUF file.
    pub fn builder(path: impl AsRef<Path>) -> LlamaModelBuilder {
        LlamaModelBuilder {
            path: path.as_ref().to_owned(),
            name: None,
            threads: None,
            lanes: 1,
            slots: 4,
            batch_requests: None,
            prefix_cache: true,
            adapters: Vec::new(),
            context: 2048,
            batch: 512,
            queue: 64,
        }
    }

    /// Sends llama.cpp's own log lines to `tracing` (target `llama-cpp-2`) instead of dropping them.
    ///
    /// llama.cpp is silent by default. The choice is process-wide and fixed when the first model loads: call
    /// this before that. Returns `false` if it came too late to take effect.
    pub fn enable_native_logs() -> bool {
        NATIVE_LOGS.store(true, Ordering::SeqCst);
        BACKEND.get().is_none()
    }

    /// The path the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The model architecture named in the GGUF file (`llama`, `gemma3`, ...).
    pub fn architecture(&self) -> &str {
        &self.shared.architecture
    }

    /// Whether the GGUF file has a chat template (otherwise only raw prompts work).
    pub fn has_chat_template(&self) -> bool {
        self.shared.template.is_some()
    }

    /// The number of CPU threads the model uses.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// How many lanes (worker threads with their own context) this handle's requests are spread over.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// A handle whose requests run with a LoRA adapter applied at `scale`.
    ///
    /// `adapter` is the name given to [`LlamaModelBuilder::adapter`], or the adapter's file path. The first
    /// call for an (adapter, scale) pair starts a lane for it: a worker with its own context over the shared
    /// weights (llama.cpp applies adapters to a whole context). Later calls reuse that lane.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for an adapter that was not loaded with the model or a scale that is not
    /// finite; [`Error::Backend`] if the lane's context cannot be created.
    pub fn with_adapter(&self, adapter: &str, scale: f32) -> Result<LlamaModel> {
        if !scale.is_finite() {
            return Err(Error::InvalidSetting { setting: "adapter scale", reason: format!("{scale} is not finite") });
        }
        let shared = &self.shared;
        let index = shared.adapters.iter().position(|a| a.name == adapter || a.path == Path::new(adapter)).ok_or_else(
            || Error::InvalidSetting {
                setting: "adapter",
                reason: format!(
                    "no adapter `{adapter}` was loaded with model {}; declare it with LlamaModelBuilder::adapter",
                    shared.name
                ),
            },
        )?;
        let mut lanes = shared.adapter_lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lane = match lanes.iter().find(|(i, bits, _)| *i == index && *bits == scale.to_bits()) {
            Some((_, _, lane)) => Arc::clone(lane),
            None => {
                let (tx, rx) = mpsc::channel(shared.queue);
                let view = LaneView::new(shared.slots);
                let lane_shared = LaneShared {
                    backend: shared.backend,
                    model: Arc::clone(&shared.model),
                    view: Arc::clone(&view),
                    create_lock: Arc::clone(&shared.create_lock),
                    lora: Some((Arc::clone(&shared.adapters[index].adapter), scale)),
                };
                let thread = format!("slm-lora{index}-{}", shared.name);
                engine::spawn(lane_shared, shared.config.clone(), rx, thread)?;
                let lane = Arc::new(Lane { jobs: AsyncMutex::new(tx), view });
                lanes.push((index, scale.to_bits(), Arc::clone(&lane)));
                lane
            }
        };
        let adapter = format!("{}@{scale}", shared.adapters[index].name);
        Ok(LlamaModel {
            shared: Arc::clone(shared),
            lanes: Arc::from(vec![lane]),
            label: Arc::from(format!("{}+{adapter}", shared.name)),
            adapter: Some(adapter),
        })
    }

    /// The adapter this handle applies (`name@scale`), if any.
    pub fn adapter(&self) -> Option<&str> {
        self.adapter.as_deref()
    }

    /// How many requests each lane decodes together.
    pub fn slots(&self) -> usize {
        self.shared.slots
    }

    /// How many requests one lane decodes together.
    pub fn batch_requests(&self) -> usize {
        self.shared.batch_requests
    }

    /// Requests submitted and not yet finished: queued, prefilling or generating.
    pub fn in_flight(&self) -> usize {
        self.lanes.iter().map(|l| l.view.in_flight()).sum()
    }

    /// The context window of one request in tokens (prompt plus output).
    pub fn context_size(&self) -> usize {
        self.shared.slot_context
    }

    /// Renders chat messages with the model's chat template, ready for generation.
    ///
    /// # Errors
    /// [`Error::NoChatTemplate`] or [`Error::Template`].
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let template =
            self.shared.template.as_ref().ok_or_else(|| Error::NoChatTemplate { model: self.shared.name.clone() })?;
        match template.render(messages, true) {
            Ok(text) => Ok(text),
            // Many templates know no `tool` role and raise; show tool results as user messages instead.
            Err(_) if messages.iter().any(|m| m.role == Role::Tool) => {
                let plain: Vec<Message> = messages
                    .iter()
                    .map(|m| match m.role {
                        Role::Tool => Message::user(format!("Tool result: {}", m.content)),
                        _ => m.clone(),
                    })
                    .collect();
                template.render(&plain, true)
            }
            Err(e) => Err(e),
        }
        .map_err(|source| Error::Template { model: self.shared.name.clone(), source })
    }

    /// Counts the tokens of a text as the model would see it in a raw prompt.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenize(text, true).len()
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> Vec<LlamaToken> {
        let vocab = self.shared.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), add_bos, true);
        // A template that writes the BOS token itself, plus the tokenizer's own, would give two.
        if add_bos && tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        tokens
    }

    fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<LlamaToken>> {
        let text = match prompt {
            Prompt::Chat(messages) => {
                if messages.is_empty() {
                    return Err(Error::InvalidRequest { reason: "a chat request needs at least one message".into() });
                }
                self.render_chat(messages)?
            }
            Prompt::Raw(text) => text.clone(),
        };
        let add_bos = self.shared.model.vocab().should_add_bos();
        let tokens = self.tokenize(&text, add_bos);
        if tokens.is_empty() {
            return Err(Error::InvalidRequest { reason: "the prompt is empty".into() });
        }
        self.check_fits(tokens.len())?;
        Ok(tokens)
    }

    fn check_fits(&self, prompt_tokens: usize) -> Result<()> {
        let room = self.shared.slot_context.saturating_sub(1);
        if prompt_tokens > room {
            return Err(Error::PromptTooLong { prompt_tokens, context_tokens: room });
        }
        Ok(())
    }

    fn guidance(&self) -> Result<&ParserFactory> {
        let factory = self.shared.guidance.get_or_init(|| {
            let started = Instant::now();
            let env = llama_cpp_2::sampling::LlamaSampler::llguidance_tok_env(&self.shared.model);
            let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
            factory.quiet();
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "grammar engine ready");
            Ok(factory)
        });
        factory.as_ref().map_err(|reason| Error::Schema { type_name: "constraint".into(), reason: reason.clone() })
    }

    fn matcher(&self, constraint: &Constraint) -> Result<Matcher> {
        let grammar = match constraint {
            Constraint::JsonSchema(schema) => TopLevelGrammar::from_json_schema(with_compact_json(schema)),
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
        };
        let factory = self.guidance()?;
        let matcher = Matcher::new(factory.create_parser(grammar));
        // A grammar llguidance cannot compile gives a matcher that constrains nothing: refuse it.
        if let Some(reason) = matcher.get_error() {
            return Err(Error::Schema { type_name: "constraint".into(), reason });
        }
        Ok(matcher)
    }

    /// Picks the lane for a prompt where it should finish first: the cost of a lane is the prompt tokens it
    /// would have to decode (those past its longest cached prefix) plus a toll per request already in flight
    /// there. A busy lane that holds most of the prompt still wins over an idle one that would decode it all
    /// (the second turn of a specialist's tool loop, typically).
    fn pick_lane(&self, prompt: &[LlamaToken]) -> usize {
        /// What one request in flight costs a newcomer, in prompt tokens (measured on 2 cores with
        /// SmolLM2-135M, a short constrained turn takes about as long as decoding 100 prompt tokens).
        const TOLL: usize = 100;
        let lanes = &self.lanes;
        if lanes.len() == 1 {
            return 0;
        }
        lanes
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (prefix, load) = (l.view.best_prefix(prompt), l.view.in_flight());
                (i, prompt.len().saturating_sub(prefix) + load * TOLL, load)
            })
            .min_by_key(|&(_, cost, load)| (cost, load))
            .map_or(0, |(i, _, _)| i)
    }

    fn job(&self, request: Request, sink: Sink) -> Result<(usize, Job)> {
        let submitted = Instant::now();
        request.sampling.check()?;
        if request.max_tokens == 0 {
            return Err(Error::InvalidRequest { reason: "max_tokens must be at least 1".into() });
        }
        let prompt = self.prompt_tokens(&request.prompt)?;
        let matcher = request.constraint.as_ref().map(|c| self.matcher(c)).transpose()?;
        let lane = self.pick_lane(&prompt);
        let ticket = self.lanes[lane].view.ticket();
        let job = Job::Generate(Box::new(GenerateJob {
            prompt,
            sampling: request.sampling,
            max_tokens: request.max_tokens as usize,
            stop: request.stop,
            matcher,
            logprobs: request.logprobs,
            sink,
            submitted,
            ticket,
        }));
        Ok((lane, job))
    }

    async fn submit(&self, lane: usize, job: Job) -> Result<()> {
        submit(&self.lanes[lane], job).await
    }
}

async fn submit(lane: &Lane, job: Job) -> Result<()> {
    let mut jobs = lane.jobs.lock().await;
    jobs.send(job).await.map_err(|_| Error::WorkerStopped)
}

/// llguidance defaults to flexible whitespace, which lets a small model pad JSON with endless newlines.
/// Compact JSON is shorter and cannot loop on whitespace.
fn with_compact_json(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "coerce_one_of": true })
        });
    }
    schema
}

#[async_trait::async_trait]
impl LanguageModel for LlamaModel {
    fn name(&self) -> &str {
        &self.label
    }

    async fn complete(&self, request: Request) -> Result<Completion> {
        let (tx, rx) = oneshot::channel();
        let (lane, job) = self.job(request, Sink::Once(tx))?;
        self.submit(lane, job).await?;
        rx.await.map_err(|_| Error::WorkerStopped)?
    }

    fn stream(&self, request: Request) -> TokenStream {
        let (tx, rx) = mpsc::unbounded();
        let (lane, job) = match self.job(request, Sink::Stream(tx)) {
            Ok(job) => job,
            Err(e) => return TokenStream::failed(e),
        };
        // Hand the request over now if the queue has room; otherwise the stream waits for room when polled.
        let job = match self.lanes[lane].jobs.try_lock() {
            Some(mut jobs) => match jobs.try_send(job) {
                Ok(()) => return TokenStream::new(rx),
                Err(e) if e.is_disconnected() => return TokenStream::failed(Error::WorkerStopped),
                Err(e) => e.into_inner(),
            },
            None => job,
        };
        let lane = Arc::clone(&self.lanes[lane]);
        TokenStream::with_submit(rx, Box::pin(async move { submit(&lane, job).await }))
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut tokenized = Vec::with_capacity(texts.len());
        for text in texts {
            let tokens = self.tokenize(text, self.shared.model.vocab().should_add_bos());
            if tokens.is_empty() {
                return Err(Error::InvalidRequest { reason: "cannot embed an empty text".into() });
            }
            self.check_fits(tokens.len())?;
            tokenized.push(tokens);
        }
        let (reply, rx) = oneshot::channel();
        let lane = (0..self.lanes.len()).min_by_key(|&i| self.lanes[i].view.in_flight()).unwrap_or(0);
        let ticket = self.lanes[lane].view.ticket();
        self.submit(lane, Job::Embed(EmbedJob { texts: tokenized, reply, _ticket: ticket })).await?;
        rx.await.map_err(|_| Error::WorkerStopped)?
    }
}
