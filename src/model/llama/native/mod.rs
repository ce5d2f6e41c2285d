//! The engine behind [`LlamaModel`](super::LlamaModel): the only folder in the crate that names `llama_cpp_2`.
//!
//! Three kinds of thread serve one loaded model:
//! - the caller's task only sends a request and awaits its answer;
//! - the model's *desk* thread prepares requests (renders the chat template, tokenizes, compiles the grammar),
//!   picks the lane that has the prompt's prefix cached, and hands the job over;
//! - each *lane* is a worker thread with its own llama.cpp context that decodes ([`engine`]).

mod draft;
mod engine;
pub(crate) mod gguf;
mod sample;
mod template;
mod text;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use futures::lock::Mutex as AsyncMutex;
use futures::{SinkExt, StreamExt};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel as RawModel};
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use self::engine::{EmbedJob, EngineConfig, GenerateJob, Job, LaneShared, LaneView, Sink};
use self::template::ChatTemplate;
use super::LlamaModelBuilder;
use crate::model::stream::TokenStream;
use crate::model::{Completion, Constraint, FastForward, Message, Prompt, Request, Role};
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

/// See [`LlamaModel::enable_native_logs`](super::LlamaModel::enable_native_logs).
pub(super) fn enable_native_logs() -> bool {
    NATIVE_LOGS.store(true, Ordering::SeqCst);
    BACKEND.get().is_none()
}

/// What a [`LlamaModel`](super::LlamaModel) handle holds.
#[derive(Clone)]
pub(super) struct Core {
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

/// What the desk thread needs to prepare requests. It holds no lane, so that the workers stop when the last
/// handle is dropped.
struct Prep {
    name: String,
    model: Arc<RawModel>,
    template: Option<ChatTemplate>,
    slot_context: usize,
    guidance: OnceLock<std::result::Result<ParserFactory, String>>,
    /// How grammars' forced tokens are decoded: [`FastForward::Forced`] needs a canonical token environment.
    fast_forward: FastForward,
    /// Requests sent to the desk and not yet handed to a lane.
    waiting: AtomicUsize,
}

/// Work for the desk thread, counted in [`Prep::waiting`] until it is handed to a lane or dropped.
enum Work {
    Generate {
        request: Box<Request>,
        lanes: Arc<[Arc<Lane>]>,
        sink: Sink,
        submitted: Instant,
        _at_desk: AtDesk,
    },
    Embed {
        texts: Vec<String>,
        lanes: Arc<[Arc<Lane>]>,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
        _at_desk: AtDesk,
    },
}

/// One request's place in the desk's count.
struct AtDesk(Arc<Prep>);

impl AtDesk {
    fn new(prep: &Arc<Prep>) -> Self {
        prep.waiting.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(prep))
    }
}

impl Drop for AtDesk {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared {
    path: PathBuf,
    architecture: String,
    prep: Arc<Prep>,
    desk: AsyncMutex<mpsc::Sender<Work>>,
    adapters: Vec<Adapter>,
    /// Lanes of (adapter index, scale bits), made on first use.
    adapter_lanes: Mutex<Vec<(usize, u32, Arc<Lane>)>>,
    lane_maker: LaneMaker,
    threads: usize,
    batch_requests: usize,
}

/// Starts lanes over the loaded model.
struct LaneMaker {
    backend: &'static LlamaBackend,
    model: Arc<RawModel>,
    config: EngineConfig,
    create_lock: Arc<Mutex<()>>,
    queue: usize,
}

impl LaneMaker {
    /// Starts a lane (with an adapter applied, if given) and waits until its context exists. Returns the lane
    /// and the tokens one of its slots holds.
    fn spawn(&self, lora: Option<(Arc<Mutex<LlamaLoraAdapter>>, f32)>, thread: String) -> Result<(Arc<Lane>, u32)> {
        let (tx, rx) = mpsc::channel(self.queue);
        let view = LaneView::new(self.config.slots as usize);
        let shared = LaneShared {
            backend: self.backend,
            model: Arc::clone(&self.model),
            view: Arc::clone(&view),
            create_lock: Arc::clone(&self.create_lock),
            lora,
        };
        let slot_context = engine::spawn(shared, self.config.clone(), rx, thread)?;
        Ok((Arc::new(Lane { jobs: AsyncMutex::new(tx), view }), slot_context))
    }
}

/// Linux keeps 15 bytes of a thread's name; names show in debuggers and `top -H`.
fn thread_name(prefix: &str, model: &str) -> String {
    let mut name = format!("{prefix}-{model}");
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

impl Core {
    pub(super) fn load(settings: LlamaModelBuilder) -> Result<Core> {
        let threads = settings.resolved_threads();
        let info = gguf::inspect(&settings.path)?;
        if info.general_type.as_deref() == Some("adapter") {
            return Err(Error::InvalidGguf {
                path: settings.path.clone(),
                reason: "this is a LoRA adapter, not a model; load it with LlamaModelBuilder::adapter".into(),
            });
        }
        let name = settings.name.clone().unwrap_or_else(|| {
            settings.path.file_stem().map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned())
        });
        let backend = backend()?;
        let started = Instant::now();
        let mut raw =
            RawModel::load_from_file(backend, &settings.path, &LlamaModelParams::default()).map_err(|_| {
                if gguf::is_known_architecture(&info.architecture) {
                    Error::ModelLoad { path: settings.path.clone(), architecture: info.architecture.clone() }
                } else {
                    Error::UnsupportedArchitecture {
                        path: settings.path.clone(),
                        architecture: info.architecture.clone(),
                    }
                }
            })?;
        let adapters = load_adapters(&mut raw, &settings.adapters, &info.architecture)?;
        let model = Arc::new(raw);
        let template = match settings.chat_template.as_ref().or(info.chat_template.as_ref()) {
            Some(source) => Some(
                chat_template(&model, source)
                    .map_err(|e| Error::Template { model: name.clone(), source: Box::new(e) })?,
            ),
            None => None,
        };

        let lane_threads = (threads / settings.lanes).max(1);
        let active = match settings.batch_requests {
            Some(n) => n,
            None if lane_threads == 1 => 1,
            None => settings.slots,
        };
        let lane_maker = LaneMaker {
            backend,
            model: Arc::clone(&model),
            config: EngineConfig {
                threads: lane_threads as i32,
                slots: settings.slots as u32,
                active: active as u32,
                prefix_cache: settings.prefix_cache,
                slot_context: settings.context as u32,
                batch: settings.batch as u32,
                sliding_window: info.sliding_window.is_some(),
                adapt_threads: settings.adapt_threads,
                fast_forward: settings.fast_forward,
            },
            create_lock: Arc::new(Mutex::new(())),
            queue: settings.queue,
        };
        let mut lanes = Vec::with_capacity(settings.lanes);
        let mut slot_context = 0;
        for i in 0..settings.lanes {
            let prefix = if settings.lanes == 1 { "slm".to_owned() } else { format!("slm{i}") };
            let (lane, tokens) = lane_maker.spawn(None, thread_name(&prefix, &name))?;
            slot_context = tokens as usize;
            lanes.push(lane);
        }
        let prep = Arc::new(Prep {
            name: name.clone(),
            model,
            template,
            slot_context,
            guidance: OnceLock::new(),
            fast_forward: settings.fast_forward,
            waiting: AtomicUsize::new(0),
        });
        let desk = spawn_desk(Arc::clone(&prep), settings.queue, thread_name("slmd", &name))?;
        tracing::info!(
            model = %name,
            architecture = %info.architecture,
            threads,
            lanes = settings.lanes,
            slots = settings.slots,
            slot_context,
            ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(Core {
            lanes: lanes.into(),
            adapter: None,
            label: Arc::from(name.as_str()),
            shared: Arc::new(Shared {
                path: settings.path,
                architecture: info.architecture,
                prep,
                desk: AsyncMutex::new(desk),
                adapters,
                adapter_lanes: Mutex::new(Vec::new()),
                lane_maker,
                threads,
                batch_requests: active,
            }),
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.label
    }

    pub(super) fn path(&self) -> &Path {
        &self.shared.path
    }

    pub(super) fn architecture(&self) -> &str {
        &self.shared.architecture
    }

    pub(super) fn has_chat_template(&self) -> bool {
        self.shared.prep.template.is_some()
    }

    pub(super) fn threads(&self) -> usize {
        self.shared.threads
    }

    pub(super) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    pub(super) fn adapter(&self) -> Option<&str> {
        self.adapter.as_deref()
    }

    pub(super) fn slots(&self) -> usize {
        self.shared.lane_maker.config.slots as usize
    }

    pub(super) fn batch_requests(&self) -> usize {
        self.shared.batch_requests
    }

    pub(super) fn in_flight(&self) -> usize {
        self.shared.prep.waiting.load(Ordering::Relaxed) + self.lanes.iter().map(|l| l.view.in_flight()).sum::<usize>()
    }

    pub(super) fn context_size(&self) -> usize {
        self.shared.prep.slot_context
    }

    pub(super) fn render_chat(&self, messages: &[Message]) -> Result<String> {
        self.shared.prep.render_chat(messages)
    }

    pub(super) fn count_tokens(&self, text: &str) -> usize {
        self.shared.prep.tokenize(text, true).len()
    }

    pub(super) fn with_adapter(&self, adapter: &str, scale: f32) -> Result<Core> {
        if !scale.is_finite() {
            return Err(Error::InvalidSetting { setting: "adapter scale", reason: format!("{scale} is not finite") });
        }
        let shared = &self.shared;
        let name = &shared.prep.name;
        let index = shared.adapters.iter().position(|a| a.name == adapter || a.path == Path::new(adapter)).ok_or_else(
            || Error::InvalidSetting {
                setting: "adapter",
                reason: format!(
                    "no adapter `{adapter}` was loaded with model {name}; declare it with LlamaModelBuilder::adapter"
                ),
            },
        )?;
        let mut lanes = shared.adapter_lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lane = match lanes.iter().find(|(i, bits, _)| *i == index && *bits == scale.to_bits()) {
            Some((_, _, lane)) => Arc::clone(lane),
            None => {
                let lora = Some((Arc::clone(&shared.adapters[index].adapter), scale));
                let (lane, _) = shared.lane_maker.spawn(lora, thread_name(&format!("slm-lora{index}"), name))?;
                lanes.push((index, scale.to_bits(), Arc::clone(&lane)));
                lane
            }
        };
        let adapter = format!("{}@{scale}", shared.adapters[index].name);
        Ok(Core {
            shared: Arc::clone(shared),
            lanes: Arc::from(vec![lane]),
            label: Arc::from(format!("{name}+{adapter}")),
            adapter: Some(adapter),
        })
    }

    /// How many requests may be in flight before `try_complete` refuses: what the lanes run at once plus
    /// the queue.
    fn capacity(&self) -> usize {
        let lanes = self.lanes.len();
        let config = &self.shared.lane_maker.config;
        lanes * config.active as usize + self.shared.lane_maker.queue
    }

    pub(super) async fn try_complete(&self, request: Request) -> Result<Completion> {
        if self.in_flight() >= self.capacity() {
            return Err(Error::Busy { model: self.name().to_owned() });
        }
        let (tx, rx) = oneshot::channel();
        let work = self.generate_work(request, Sink::Once(tx));
        match self.shared.desk.try_lock().map(|mut desk| desk.try_send(work)) {
            Some(Ok(())) => {}
            Some(Err(e)) if e.is_disconnected() => return Err(Error::WorkerStopped),
            _ => return Err(Error::Busy { model: self.name().to_owned() }),
        }
        rx.await.map_err(|_| Error::WorkerStopped)?
    }

    pub(super) async fn complete(&self, request: Request) -> Result<Completion> {
        let (tx, rx) = oneshot::channel();
        self.send(self.generate_work(request, Sink::Once(tx))).await?;
        rx.await.map_err(|_| Error::WorkerStopped)?
    }

    pub(super) fn stream(&self, request: Request) -> TokenStream {
        let (tx, rx) = crate::model::stream::channel();
        let work = self.generate_work(request, Sink::Stream(tx));
        // Hand the request over now if the desk has room; otherwise the stream waits for room when polled.
        let work = match self.shared.desk.try_lock() {
            Some(mut desk) => match desk.try_send(work) {
                Ok(()) => return TokenStream::new(rx),
                Err(e) if e.is_disconnected() => return TokenStream::failed(Error::WorkerStopped),
                Err(e) => e.into_inner(),
            },
            None => work,
        };
        let shared = Arc::clone(&self.shared);
        TokenStream::with_submit(rx, Box::pin(async move { send(&shared, work).await }))
    }

    pub(super) async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let (reply, rx) = oneshot::channel();
        let at_desk = AtDesk::new(&self.shared.prep);
        self.send(Work::Embed { texts: texts.to_vec(), lanes: Arc::clone(&self.lanes), reply, _at_desk: at_desk })
            .await?;
        rx.await.map_err(|_| Error::WorkerStopped)?
    }

    fn generate_work(&self, request: Request, sink: Sink) -> Work {
        Work::Generate {
            request: Box::new(request),
            lanes: Arc::clone(&self.lanes),
            sink,
            submitted: Instant::now(),
            _at_desk: AtDesk::new(&self.shared.prep),
        }
    }

    async fn send(&self, work: Work) -> Result<()> {
        send(&self.shared, work).await
    }
}

async fn send(shared: &Shared, work: Work) -> Result<()> {
    let mut desk = shared.desk.lock().await;
    desk.send(work).await.map_err(|_| Error::WorkerStopped)
}

fn load_adapters(raw: &mut RawModel, declared: &[(String, PathBuf)], architecture: &str) -> Result<Vec<Adapter>> {
    let mut adapters = Vec::with_capacity(declared.len());
    for (adapter_name, path) in declared {
        let file = gguf::inspect(path).map_err(|e| match e {
            Error::InvalidGguf { reason, .. } => Error::Adapter { path: path.clone(), reason },
            other => other,
        })?;
        if file.general_type.as_deref() != Some("adapter") {
            return Err(Error::Adapter { path: path.clone(), reason: "the file is not a LoRA adapter".into() });
        }
        if file.architecture != architecture {
            return Err(Error::Adapter {
                path: path.clone(),
                reason: format!("made for `{}`, not `{architecture}`", file.architecture),
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
    Ok(adapters)
}

fn chat_template(model: &RawModel, source: &str) -> std::result::Result<ChatTemplate, minijinja::Error> {
    let vocab = model.vocab();
    let piece = |t: LlamaToken| {
        if t.0 < 0 {
            String::new()
        } else {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        }
    };
    ChatTemplate::new(source.to_owned(), piece(vocab.bos()), piece(vocab.eos()))
}

/// Bytes per token of context allowed in a prompt before it is refused untokenized.
const MAX_BYTES_PER_TOKEN: usize = 64;

/// Starts the desk thread; it ends when the last sender (the last handle) is gone and its work is done.
fn spawn_desk(prep: Arc<Prep>, queue: usize, thread: String) -> Result<mpsc::Sender<Work>> {
    let (tx, mut rx) = mpsc::channel::<Work>(queue);
    std::thread::Builder::new()
        .name(thread)
        .spawn(move || {
            while let Some(work) = futures::executor::block_on(rx.next()) {
                prep.handle(work);
            }
        })
        .map_err(|e| Error::Backend { what: format!("cannot start the model's desk thread: {e}") })?;
    Ok(tx)
}

impl Prep {
    /// Prepares one piece of work and hands it to a lane (waiting for room in the lane's queue).
    fn handle(&self, work: Work) {
        match work {
            Work::Generate { request, lanes, sink, submitted, _at_desk } => {
                if sink.is_closed() {
                    return; // The caller has gone.
                }
                let (prompt, matcher) = match self.prepare(&request) {
                    Ok(prepared) => prepared,
                    Err(e) => return sink.finish(Err(e)),
                };
                let lane = pick_lane(&lanes, &prompt);
                let job = Job::Generate(Box::new(GenerateJob {
                    prompt,
                    sampling: request.sampling,
                    max_tokens: request.max_tokens as usize,
                    stop: request.stop,
                    matcher,
                    logprobs: request.logprobs,
                    sink,
                    submitted,
                    ticket: lanes[lane].view.ticket(),
                }));
                if futures::executor::block_on(submit(&lanes[lane], job)).is_err() {
                    tracing::warn!(model = %self.name, "a lane has stopped");
                }
            }
            Work::Embed { texts, lanes, reply, _at_desk } => {
                if reply.is_canceled() {
                    return;
                }
                let mut tokenized = Vec::with_capacity(texts.len());
                for text in &texts {
                    if text.len() > self.max_prompt_bytes() {
                        let _ = reply
                            .send(Err(Error::PromptTooLarge { bytes: text.len(), limit: self.max_prompt_bytes() }));
                        return;
                    }
                    let tokens = self.tokenize(text, self.model.vocab().should_add_bos());
                    let checked = if tokens.is_empty() {
                        Err(Error::InvalidRequest { reason: "cannot embed an empty text".into() })
                    } else {
                        self.check_fits(tokens.len())
                    };
                    if let Err(e) = checked {
                        let _ = reply.send(Err(e));
                        return;
                    }
                    tokenized.push(tokens);
                }
                let lane = (0..lanes.len()).min_by_key(|&i| lanes[i].view.in_flight()).unwrap_or(0);
                let ticket = lanes[lane].view.ticket();
                let job = Job::Embed(EmbedJob { texts: tokenized, reply, _ticket: ticket });
                if futures::executor::block_on(submit(&lanes[lane], job)).is_err() {
                    tracing::warn!(model = %self.name, "a lane has stopped");
                }
            }
        }
    }

    /// The most bytes a prompt may have: far more than any prompt that fits the context (a token is a few
    /// bytes), and small enough that tokenizing it is quick.
    fn max_prompt_bytes(&self) -> usize {
        self.slot_context.saturating_mul(MAX_BYTES_PER_TOKEN).max(64 * 1024)
    }

    fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let template = self.template.as_ref().ok_or_else(|| Error::NoChatTemplate { model: self.name.clone() })?;
        let limit = self.max_prompt_bytes();
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        if bytes > limit {
            return Err(Error::PromptTooLarge { bytes, limit });
        }
        match template.render(messages, true, limit) {
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
                template.render(&plain, true, limit)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| Error::Template { model: self.name.clone(), source: Box::new(e) })
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
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
            Prompt::Raw(text) => {
                if text.len() > self.max_prompt_bytes() {
                    return Err(Error::PromptTooLarge { bytes: text.len(), limit: self.max_prompt_bytes() });
                }
                text.clone()
            }
        };
        let add_bos = self.model.vocab().should_add_bos();
        let tokens = self.tokenize(&text, add_bos);
        if tokens.is_empty() {
            return Err(Error::InvalidRequest { reason: "the prompt is empty".into() });
        }
        self.check_fits(tokens.len())?;
        Ok(tokens)
    }

    fn check_fits(&self, prompt_tokens: usize) -> Result<()> {
        let room = self.slot_context.saturating_sub(1);
        if prompt_tokens > room {
            return Err(Error::PromptTooLong { prompt_tokens, context_tokens: room });
        }
        Ok(())
    }

    fn guidance(&self) -> Result<&ParserFactory> {
        let factory = self.guidance.get_or_init(|| {
            let started = Instant::now();
            let env = draft::LlamaTokEnv::build(&self.model, self.fast_forward);
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

    /// Checks a generation request and prepares its prompt tokens and grammar.
    fn prepare(&self, request: &Request) -> Result<(Vec<LlamaToken>, Option<Matcher>)> {
        request.sampling.check()?;
        if request.max_tokens == 0 {
            return Err(Error::InvalidRequest { reason: "max_tokens must be at least 1".into() });
        }
        let prompt = self.prompt_tokens(&request.prompt)?;
        let matcher = request.constraint.as_ref().map(|c| self.matcher(c)).transpose()?;
        Ok((prompt, matcher))
    }
}

/// Picks the lane for a prompt where it should finish first: the cost of a lane is the prompt tokens it would
/// have to decode (those past its longest cached prefix) plus a toll per request already in flight there. A
/// busy lane that holds most of the prompt still wins over an idle one that would decode it all (the second
/// turn of a specialist's tool loop, typically).
fn pick_lane(lanes: &[Arc<Lane>], prompt: &[LlamaToken]) -> usize {
    /// What one request in flight costs a newcomer, in prompt tokens (measured on 2 cores with SmolLM2-135M,
    /// a short constrained turn takes about as long as decoding 100 prompt tokens).
    const TOLL: usize = 100;
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
