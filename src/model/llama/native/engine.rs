//! The worker thread that owns a model's llama.cpp contexts.
//!
//! llama.cpp contexts borrow their model and are not `Sync`, so they live on one dedicated thread per loaded
//! model. Requests arrive on a bounded channel and answers leave on oneshot or stream channels; no async
//! executor is ever blocked and none is required.
//!
//! The worker decodes all active requests together (continuous batching): the context holds one sequence per
//! slot, and every step decodes one token for each generating slot (with the draft of what its grammar forces
//! after it, see [`Drafter`]) plus a chunk of each waiting prompt. A slot
//! keeps the tokens its sequence holds in the KV cache, so a new request that shares a prefix with them (a
//! specialist's instructions, an earlier turn of a chat) only decodes the rest.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel as RawModel};
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;

use super::draft::Drafter;
use super::sample::{loop_token, sample, sample_scored, Rng};
use super::text::{Added, TextBuffer};
use crate::model::stream::StreamSender;
use crate::model::{Completion, FastForward, FinishReason, Sampling, TokenLogprob, Usage};
use crate::{Error, Result};

/// Settings of one worker.
#[derive(Debug, Clone)]
pub(super) struct EngineConfig {
    pub(super) threads: i32,
    pub(super) slots: u32,
    /// At most this many slots generate at once; the others only keep their cache.
    pub(super) active: u32,
    /// Whether a slot reuses the cached prefix of its last prompt.
    pub(super) prefix_cache: bool,
    pub(super) slot_context: u32,
    pub(super) batch: u32,
    pub(super) sliding_window: bool,
    /// Whether the lane drops to fewer threads while other processes want the cores ([`Contention`]).
    pub(super) adapt_threads: bool,
    /// How the tokens a grammar forces are decoded ([`Drafter`]).
    pub(super) fast_forward: FastForward,
}

impl EngineConfig {
    /// The parameters of a lane's context, with `threads` threads.
    fn context_params(&self, threads: i32) -> LlamaContextParams {
        let n_ctx = self.slots.saturating_mul(self.slot_context);
        LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(self.batch)
            .with_n_ubatch(self.batch)
            .with_n_seq_max(self.slots)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_swa_full(self.sliding_window)
    }
}

/// What a handle can see of a lane (one worker and its context): its load and what its slots hold, so that
/// requests go to the lane that already has their prefix cached.
#[derive(Debug)]
pub(super) struct LaneView {
    in_flight: AtomicUsize,
    /// Per slot, the prompt most recently started there (its KV cells are what the slot caches).
    cached: Mutex<Vec<Vec<LlamaToken>>>,
}

impl LaneView {
    pub(super) fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self { in_flight: AtomicUsize::new(0), cached: Mutex::new(vec![Vec::new(); slots]) })
    }

    /// Requests submitted to this lane and not yet finished (queued or running).
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The longest prefix of `prompt` that one of this lane's slots holds.
    pub(super) fn best_prefix(&self, prompt: &[LlamaToken]) -> usize {
        let cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cached.iter().map(|c| common_prefix(c, prompt)).max().unwrap_or(0)
    }

    fn set_cached(&self, slot: usize, tokens: &[LlamaToken]) {
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cached.get_mut(slot) {
            c.clear();
            c.extend_from_slice(tokens);
        }
    }

    /// Counts a request in until the returned ticket is dropped (finished, cancelled or failed, wherever).
    pub(super) fn ticket(self: &Arc<Self>) -> Ticket {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ticket(Arc::clone(self))
    }
}

/// One request's place in a lane's load count.
#[derive(Debug)]
pub(super) struct Ticket(Arc<LaneView>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Work sent to the worker.
pub(super) enum Job {
    Generate(Box<GenerateJob>),
    Embed(EmbedJob),
}

pub(super) struct GenerateJob {
    pub(super) prompt: Vec<LlamaToken>,
    pub(super) sampling: Sampling,
    pub(super) max_tokens: usize,
    pub(super) stop: Vec<String>,
    pub(super) matcher: Option<Matcher>,
    pub(super) logprobs: bool,
    pub(super) sink: Sink,
    pub(super) submitted: Instant,
    pub(super) ticket: Ticket,
}

pub(super) struct EmbedJob {
    pub(super) texts: Vec<Vec<LlamaToken>>,
    pub(super) reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
    /// Held until the job is dropped, after its answer is sent.
    pub(super) _ticket: Ticket,
}

/// Where a generation's output goes.
pub(super) enum Sink {
    Once(oneshot::Sender<Result<Completion>>),
    Stream(StreamSender),
}

impl Sink {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Sink::Once(tx) => tx.is_canceled(),
            Sink::Stream(tx) => tx.is_closed(),
        }
    }

    fn text(&mut self, text: String) {
        if let Sink::Stream(tx) = self {
            tx.text(&text);
        }
    }

    pub(super) fn finish(self, result: Result<Completion>) {
        match self {
            Sink::Once(tx) => {
                let _ = tx.send(result);
            }
            Sink::Stream(tx) => tx.finish(result),
        }
    }
}

/// What a worker shares with the rest of its model.
pub(super) struct LaneShared {
    pub(super) backend: &'static LlamaBackend,
    pub(super) model: Arc<RawModel>,
    pub(super) view: Arc<LaneView>,
    /// Held while creating a context: llama.cpp may mutate the model then, so two at once would be unsound.
    pub(super) create_lock: Arc<Mutex<()>>,
    /// A LoRA adapter applied to this lane's context, with its scale.
    pub(super) lora: Option<(Arc<Mutex<LlamaLoraAdapter>>, f32)>,
}

/// Starts a worker thread and waits until its context exists. Returns the tokens one slot can hold.
pub(super) fn spawn(
    shared: LaneShared,
    config: EngineConfig,
    jobs: mpsc::Receiver<Job>,
    thread_name: String,
) -> Result<u32> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || worker(shared, config, jobs, ready_tx))
        .map_err(|e| Error::Backend { what: format!("cannot start the model worker thread: {e}") })?;
    ready_rx.recv().map_err(|_| Error::WorkerStopped)?
}

fn worker(
    shared: LaneShared,
    config: EngineConfig,
    mut jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<u32>>,
) {
    let LaneShared { backend, model, view, create_lock, lora } = shared;
    let ctx = match new_context(&model, backend, &create_lock, lora.as_ref(), &config, config.threads) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let slot_context = ctx.n_ctx() / config.slots.max(1);
    if ready.send(Ok(slot_context)).is_err() {
        return;
    }
    tracing::debug!(slots = config.slots, slot_context, threads = config.threads, "model worker started");
    let mut engine = Engine {
        model: &model,
        backend,
        view,
        create_lock,
        lora,
        threads: config.threads,
        contention: Contention::new(),
        config: config.clone(),
        slot_context: slot_context as usize,
        ctx,
        embed_ctx: None,
        batch: LlamaBatch::new(config.batch as usize, 1),
        slots: (0..config.slots)
            .map(|i| Slot { seq: i as i32, cached: Vec::new(), last_used: 0, active: None })
            .collect(),
        clock: 0,
        scratch: Vec::new(),
        unlooped: Vec::new(),
        outputs: Vec::new(),
        drafter: Drafter::new(&model, &config),
    };
    engine.run(&mut jobs);
    tracing::debug!("model worker stopped");
}

/// A context for a lane, with `threads` threads and its LoRA adapter applied.
fn new_context<'m>(
    model: &'m RawModel,
    backend: &LlamaBackend,
    create_lock: &Mutex<()>,
    lora: Option<&(Arc<Mutex<LlamaLoraAdapter>>, f32)>,
    config: &EngineConfig,
    threads: i32,
) -> Result<LlamaContext<'m>> {
    let n_ctx = config.slots.saturating_mul(config.slot_context);
    let created = {
        let _guard = create_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        model.new_context(backend, config.context_params(threads))
    };
    let mut ctx =
        created.map_err(|e| Error::Backend { what: format!("cannot create a context of {n_ctx} tokens: {e}") })?;
    if let Some((adapter, scale)) = lora {
        let mut adapter = adapter.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ctx.lora_adapter_set(&mut adapter, *scale)
            .map_err(|e| Error::Backend { what: format!("cannot apply the LoRA adapter: {e}") })?;
    }
    Ok(ctx)
}

/// Whether other processes want this machine's cores, sampled while the lane decodes.
///
/// llama.cpp's threads meet at a barrier after every operation of a decode step, and wait there by spinning
/// (OpenMP spins for milliseconds before it sleeps). With more runnable threads than cores, a thread that is
/// switched out holds all the others: on 2 cores beside one busy process, 2-thread decoding fell from ~190 to
/// 0.5–2 tokens/s, while a single thread, which never waits at a barrier, kept ~170. So a lane with several
/// threads counts the runnable threads that are not its own (`/proc/loadavg`'s running count, Linux) and,
/// when they would leave it fewer cores than threads, goes on with fewer threads (a new context, into which
/// its sequences' KV cells are copied), and back once the cores are free.
struct Contention {
    /// The other runnable threads seen, with when.
    others: VecDeque<(Instant, f32)>,
    last_switch: Instant,
    /// The cores this process may use.
    cores: usize,
    /// The machine's online CPUs, which the running count is taken over (more than `cores` in a container
    /// on a larger host, whose `/proc/loadavg` counts the whole host).
    cpus: usize,
    /// Whether the running count can be read here.
    readable: bool,
}

impl Contention {
    /// Samples further apart than this are not taken (a step is usually a few milliseconds).
    const EVERY: std::time::Duration = std::time::Duration::from_millis(10);
    /// What a decision looks at: the samples of this last while...
    const WINDOW: std::time::Duration = std::time::Duration::from_millis(400);
    /// ...once they span this long (steps of a starved lane are slow: a few samples must do).
    const SPAN: std::time::Duration = std::time::Duration::from_millis(250);
    /// The least time between two switches.
    const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

    fn new() -> Self {
        let cpus = online_cpus();
        Self {
            others: VecDeque::new(),
            last_switch: Instant::now(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpus: cpus.unwrap_or(1),
            readable: cpus.is_some() && running_threads().is_some(),
        }
    }

    /// A new sample, taken while `ours` threads decode; the thread count the lane should use, if it should
    /// change from `ours` (at most `most`).
    fn sample(&mut self, ours: i32, most: i32) -> Option<i32> {
        let now = Instant::now();
        if !self.readable || self.others.back().is_some_and(|(t, _)| now.duration_since(*t) < Self::EVERY) {
            return None;
        }
        let running = running_threads()?;
        self.decide(now, running, ours, most)
    }

    /// Takes the running count `running` seen at `now` while `ours` threads decode; the thread count to
    /// change to, if any.
    fn decide(&mut self, now: Instant, running: usize, ours: i32, most: i32) -> Option<i32> {
        // Every thread of ours is counted as running (the count is taken between steps, when one of them
        // reads it and the others may already be asleep): what is left is someone else's.
        let others = running.saturating_sub(ours.max(1) as usize) as f32;
        self.others.push_back((now, others));
        while self.others.front().is_some_and(|(t, _)| now.duration_since(*t) > Self::WINDOW) {
            self.others.pop_front();
        }
        let span = self.others.front().map_or(std::time::Duration::ZERO, |(t, _)| now.duration_since(*t));
        if self.others.len() < 2 || span < Self::SPAN || now.saturating_duration_since(self.last_switch) < Self::SETTLE
        {
            return None;
        }
        // The other runnable threads that three samples in four see at least: a busy process is runnable in
        // every sample, while the host's own short bursts (a tool, a reply being parsed, the next prompt being
        // prepared) show in one or two. With the mean, such bursts in two of the four samples a window of
        // prefill steps holds moved an idle machine's lane to one thread (measured in the trip planner).
        let mut seen: Vec<f32> = self.others.iter().map(|&(_, o)| o).collect();
        seen.sort_by(f32::total_cmp);
        let steady = seen[seen.len() / 4];
        let free = (self.cpus as f32 - steady).round().max(1.0) as i32;
        let want = free.min(self.cores as i32).min(most).max(1);
        if want == ours {
            return None;
        }
        tracing::debug!(?seen, cpus = self.cpus, "other runnable threads in the last window (sorted)");
        Some(want)
    }

    fn switched(&mut self) {
        self.last_switch = Instant::now();
        self.others.clear();
    }
}

/// The machine's online CPUs (the `cpuN` lines of `/proc/stat`).
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let n =
        text.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    (n > 0).then_some(n)
}

/// Runnable threads on the machine now (the fourth field of `/proc/loadavg`, `running/total`).
fn running_threads() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().nth(3)?.split('/').next()?.parse().ok()
}

struct Slot {
    seq: i32,
    /// The tokens whose KV cells this slot's sequence holds, in position order.
    cached: Vec<LlamaToken>,
    last_used: u64,
    active: Option<Active>,
}

struct Active {
    prompt: Vec<LlamaToken>,
    /// Prompt tokens now in the KV cache (during prefill equal to `cached.len()`).
    prefilled: usize,
    /// The token sampled last and the tokens the grammar forces after it ([`Drafter`]): decoded in the next
    /// step, and read back after it (a draft is confirmed then).
    pending: Vec<LlamaToken>,
    /// Generated tokens confirmed from a draft (decoded without a step of their own).
    forced: usize,
    sampling: Sampling,
    rng: Rng,
    matcher: Option<Matcher>,
    /// Filled when the request asked for log-probabilities.
    logprobs: Option<Vec<TokenLogprob>>,
    max_tokens: usize,
    generated: usize,
    /// The tokens generated so far (for loop breaking).
    history: Vec<u32>,
    text: TextBuffer,
    sink: Sink,
    submitted: Instant,
    first_token: Option<Instant>,
    cached_prompt_tokens: usize,
    _ticket: Ticket,
}

struct Engine<'m> {
    model: &'m RawModel,
    backend: &'static LlamaBackend,
    view: Arc<LaneView>,
    create_lock: Arc<Mutex<()>>,
    lora: Option<(Arc<Mutex<LlamaLoraAdapter>>, f32)>,
    /// The threads the context decodes with now.
    threads: i32,
    contention: Contention,
    config: EngineConfig,
    slot_context: usize,
    ctx: LlamaContext<'m>,
    embed_ctx: Option<LlamaContext<'m>>,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    clock: u64,
    scratch: Vec<(u32, f32)>,
    /// The logits of a step with a loop to break, copied so that the looping token can be ruled out.
    unlooped: Vec<f32>,
    /// (slot index, batch index) of the logits requested in the current step, a slot's in position order.
    outputs: Vec<(usize, i32)>,
    drafter: Drafter,
}

impl Engine<'_> {
    fn run(&mut self, jobs: &mut mpsc::Receiver<Job>) {
        loop {
            while self.slots.iter().filter(|s| s.active.is_some()).count() < self.config.active as usize {
                let job = if self.is_idle() {
                    match futures::executor::block_on(jobs.next()) {
                        Some(job) => job,
                        None => return,
                    }
                } else {
                    match jobs.try_recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                };
                self.accept(job);
            }
            if !self.is_idle() {
                if self.config.adapt_threads && self.config.threads > 1 {
                    if let Some(threads) = self.contention.sample(self.threads, self.config.threads) {
                        self.switch_threads(threads);
                    }
                }
                self.step();
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.slots.iter().all(|s| s.active.is_none())
    }

    fn accept(&mut self, job: Job) {
        match job {
            Job::Embed(job) => {
                let EmbedJob { texts, reply, _ticket: ticket } = job;
                if !reply.is_canceled() {
                    let result = self.embed(&texts);
                    // Out of the load count before the caller hears back, so its next request sees a free lane.
                    drop(ticket);
                    let _ = reply.send(result);
                }
            }
            Job::Generate(job) => {
                if job.sink.is_closed() {
                    return;
                }
                self.start(*job);
            }
        }
    }

    /// Puts a request on the free slot whose cache shares the longest prefix with its prompt.
    fn start(&mut self, job: GenerateJob) {
        let Some(idx) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .max_by_key(|(_, s)| (common_prefix(&s.cached, &job.prompt), std::cmp::Reverse(s.last_used)))
            .map(|(i, _)| i)
        else {
            return;
        };
        self.clock += 1;
        let slot = &mut self.slots[idx];
        slot.last_used = self.clock;
        // Keep at least one prompt token to decode: its logits give the first generated token.
        let mut keep = if self.config.prefix_cache {
            common_prefix(&slot.cached, &job.prompt).min(job.prompt.len().saturating_sub(1))
        } else {
            0
        };
        if keep < slot.cached.len() {
            let removed = self.ctx.kv_cache_seq_rm(slot.seq, Some(keep as u32), None);
            if removed.is_err() {
                let _ = self.ctx.kv_cache_seq_rm(slot.seq, None, None);
                keep = 0;
            }
            slot.cached.truncate(keep);
        }
        tracing::trace!(slot = idx, prompt = job.prompt.len(), cached = keep, "request started");
        self.view.set_cached(idx, &job.prompt);
        slot.active = Some(Active {
            prompt: job.prompt,
            prefilled: keep,
            pending: Vec::new(),
            forced: 0,
            rng: Rng::new(job.sampling.seed),
            sampling: job.sampling,
            matcher: job.matcher,
            logprobs: job.logprobs.then(Vec::new),
            max_tokens: job.max_tokens,
            generated: 0,
            history: Vec::new(),
            text: TextBuffer::new(job.stop),
            sink: job.sink,
            submitted: job.submitted,
            first_token: None,
            cached_prompt_tokens: keep,
            _ticket: job.ticket,
        });
    }

    /// One decode step over every active slot.
    fn step(&mut self) {
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(|a| a.sink.is_closed()) {
                tracing::trace!(seq = slot.seq, "request cancelled");
                slot.active = None;
            }
        }
        self.batch.clear();
        self.outputs.clear();
        let capacity = self.config.batch as usize;
        let mut n = 0usize;
        let mut add_failed = false;
        // Generating slots first: the token sampled last and the tokens after it. A draft to confirm has logits
        // at each (those after a draft token confirm it or not; those after the last give the next token);
        // forced tokens, already in the output, only at the last.
        let confirm = self.drafter.confirms();
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            let Some(active) = slot.active.as_ref() else { continue };
            let last = active.pending.len();
            for (k, &token) in active.pending.iter().enumerate() {
                let logits = confirm || k + 1 == last;
                add_failed |= self.batch.add(token, slot.cached.len() as i32, &[slot.seq], logits).is_err();
                slot.cached.push(token);
                if logits {
                    self.outputs.push((idx, n as i32));
                }
                n += 1;
            }
        }
        // Then chunks of prompts, as far as the batch allows.
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            let Some(active) = slot.active.as_mut() else { continue };
            if active.generated > 0 || active.prefilled >= active.prompt.len() {
                continue;
            }
            let take = (capacity - n).min(active.prompt.len() - active.prefilled);
            for j in active.prefilled..active.prefilled + take {
                let last = j + 1 == active.prompt.len();
                let token = active.prompt[j];
                add_failed |= self.batch.add(token, slot.cached.len() as i32, &[slot.seq], last).is_err();
                slot.cached.push(token);
                if last {
                    self.outputs.push((idx, n as i32));
                }
                n += 1;
            }
            active.prefilled += take;
            if n >= capacity {
                break;
            }
        }
        if n == 0 {
            return;
        }
        let decoded = if add_failed {
            Err("batch overflow".to_string())
        } else {
            self.ctx.decode(&mut self.batch).map_err(|e| e.to_string())
        };
        if let Err(reason) = decoded {
            tracing::warn!(%reason, "decode failed");
            self.fail_batch(&reason);
            return;
        }
        let outputs = std::mem::take(&mut self.outputs);
        for group in outputs.chunk_by(|a, b| a.0 == b.0) {
            self.advance(group[0].0, group.iter().map(|&(_, b)| b));
        }
        self.outputs = outputs;
    }

    /// Goes on with `threads` threads: a new context, into which every slot's state (its KV cells: the
    /// request in flight, or the prefix it caches) is copied. A slot whose state cannot be copied loses its
    /// cache, and its request, if any, fails.
    fn switch_threads(&mut self, threads: i32) {
        use llama_cpp_2::context::session::LlamaStateSeqFlags;
        self.contention.switched();
        let started = Instant::now();
        let mut ctx =
            match new_context(self.model, self.backend, &self.create_lock, self.lora.as_ref(), &self.config, threads) {
                Ok(ctx) => ctx,
                Err(e) => {
                    tracing::warn!(error = %e, threads, "cannot change the lane's threads");
                    return;
                }
            };
        let mut copied = 0;
        for idx in 0..self.slots.len() {
            let slot = &mut self.slots[idx];
            if slot.cached.is_empty() {
                continue;
            }
            let moved = self
                .ctx
                .state_seq_get(slot.seq, LlamaStateSeqFlags::empty())
                .and_then(|state| ctx.state_seq_set(&state, slot.seq));
            match moved {
                Ok(()) => copied += slot.cached.len(),
                Err(e) => {
                    tracing::warn!(error = %e, seq = slot.seq, "cannot copy a sequence's state to the new context");
                    slot.cached.clear();
                    self.view.set_cached(idx, &[]);
                    fail(slot, "the request's state could not be moved".into());
                }
            }
        }
        tracing::info!(
            from = self.threads,
            to = threads,
            tokens = copied,
            ms = started.elapsed().as_millis() as u64,
            "CPU contention changed: the lane decodes with {threads} threads"
        );
        self.ctx = ctx;
        self.threads = threads;
    }

    fn fail_batch(&mut self, reason: &str) {
        for idx in 0..self.slots.len() {
            if let Some(active) = self.slots[idx].active.take() {
                self.forget(idx);
                active.end(Err(Error::Decode { reason: reason.to_owned() }));
            }
        }
    }

    /// Drops everything slot `idx` holds in the KV cache, and what it says it caches.
    fn forget(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        let _ = self.ctx.kv_cache_seq_rm(slot.seq, None, None);
        slot.cached.clear();
        self.view.set_cached(idx, &[]);
    }

    /// Goes on with a slot after a step, from the logits at `batch_indices`: those after the sampled token and
    /// after each draft token. Each gives the token the model picks there, exactly as a step of its own would;
    /// while that is the draft's next token the draft token is confirmed (it is already decoded), at the
    /// first other token the rest of the draft leaves the KV cache, and the picked token is the one decoded
    /// next, with a new draft after it.
    fn advance(&mut self, idx: usize, batch_indices: impl Iterator<Item = i32>) {
        let Some(active) = self.slots[idx].active.as_mut() else { return };
        let decoded = std::mem::take(&mut active.pending);
        let draft = if self.drafter.confirms() { decoded.get(1..).unwrap_or_default() } else { &[] };
        for (j, batch_idx) in batch_indices.enumerate() {
            let Some(token) = self.pick(idx, batch_idx) else { return };
            let slot = &mut self.slots[idx];
            // Draft tokens from `j` on: the last `unconfirmed` cells of the slot's sequence.
            let unconfirmed = draft.len().saturating_sub(j);
            if draft.get(j) == Some(&token) {
                let at = slot.cached.len() - unconfirmed;
                if !self.take(idx, token, at, true) {
                    return;
                }
                continue;
            }
            if unconfirmed > 0 {
                let from = slot.cached.len() - unconfirmed;
                if self.ctx.kv_cache_seq_rm(slot.seq, Some(from as u32), None).is_err() {
                    self.forget(idx);
                    fail(&mut self.slots[idx], "the draft could not be removed from the KV cache".into());
                    return;
                }
                slot.cached.truncate(from);
                tracing::trace!(seq = slot.seq, confirmed = j, rejected = unconfirmed, "draft rejected");
            }
            let at = slot.cached.len();
            if self.take(idx, token, at, false) {
                self.draft_after(idx, token);
            }
            return;
        }
    }

    /// The token the model picks from the logits at `batch_idx`, under the slot's sampling and grammar (and
    /// its log-probabilities, when asked for). `None` when the grammar allows nothing: the request failed.
    fn pick(&mut self, idx: usize, batch_idx: i32) -> Option<LlamaToken> {
        let mut logits = self.ctx.get_logits_ith(batch_idx);
        let slot = &mut self.slots[idx];
        let active = slot.active.as_mut()?;
        let banned = if active.sampling.break_loops { loop_token(&active.history) } else { None };
        if let Some(banned) = banned.filter(|b| (*b as usize) < logits.len()) {
            self.unlooped.clear();
            self.unlooped.extend_from_slice(logits);
            self.unlooped[banned as usize] = -1e30;
            logits = &self.unlooped;
            tracing::trace!(seq = slot.seq, banned, "loop broken");
        }
        let vocab = self.model.vocab();
        let sampled = if let Some(scores) = active.logprobs.as_mut() {
            sample_scored(logits, &active.sampling, &mut active.rng, active.matcher.as_mut(), &mut self.scratch).map(
                |(token, logprob, top)| {
                    let text = |t: u32| {
                        String::from_utf8_lossy(&vocab.token_to_piece(LlamaToken(t as i32), true, None)).into_owned()
                    };
                    scores.push(TokenLogprob {
                        token: text(token),
                        logprob,
                        top: top.into_iter().map(|(t, l)| (text(t), l)).collect(),
                    });
                    token
                },
            )
        } else {
            sample(logits, &active.sampling, &mut active.rng, active.matcher.as_mut(), &mut self.scratch)
        };
        active.first_token.get_or_insert_with(Instant::now);
        match sampled {
            Ok(t) => {
                active.history.push(t);
                Some(LlamaToken(t as i32))
            }
            Err(e) => {
                fail(slot, format!("constraint failed: {}", e.0));
                None
            }
        }
    }

    /// Adds a picked token to the slot's output; `at` is its position in the sequence, `confirmed` whether it
    /// is a draft token (already decoded). Returns whether the request goes on.
    fn take(&mut self, idx: usize, token: LlamaToken, at: usize, confirmed: bool) -> bool {
        let vocab = self.model.vocab();
        let slot = &mut self.slots[idx];
        let Some(active) = slot.active.as_mut() else { return false };
        if vocab.is_eog(token) {
            finish(slot, FinishReason::EndOfText);
            return false;
        }
        if let Some(m) = active.matcher.as_mut() {
            if let Err(e) = m.consume_token(token.0 as u32) {
                fail(slot, format!("constraint failed: {e}"));
                return false;
            }
        }
        active.generated += 1;
        active.forced += usize::from(confirmed);
        let piece = vocab.token_to_piece(token, false, None);
        match active.text.push(&piece) {
            Added::Continue(text) => active.sink.text(text),
            Added::Stopped(text) => {
                active.sink.text(text);
                finish(slot, FinishReason::Stop);
                return false;
            }
        }
        let reason = if active.matcher.as_ref().is_some_and(Matcher::is_stopped) {
            Some(FinishReason::EndOfText)
        } else if active.generated >= active.max_tokens {
            Some(FinishReason::MaxTokens)
        } else if at + 1 >= self.slot_context {
            Some(FinishReason::ContextFull)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                finish(slot, reason);
                false
            }
            None => true,
        }
    }

    /// Queues `token` for the next step, with what the grammar forces after it, as far as the request's budget,
    /// the slot's context and its share of a batch allow: a draft to confirm, or forced tokens, which go into
    /// the output now.
    fn draft_after(&mut self, idx: usize, token: LlamaToken) {
        let slot = &mut self.slots[idx];
        let Some(active) = slot.active.as_mut() else { return };
        active.pending.clear();
        active.pending.push(token);
        let room = (active.max_tokens.saturating_sub(active.generated))
            .min(self.slot_context.saturating_sub(slot.cached.len() + 1));
        let Some(m) = active.matcher.as_mut() else { return };
        let draft = self.drafter.draft(self.model, m, room, active.logprobs.is_some());
        if draft.is_empty() {
            return;
        }
        tracing::trace!(seq = slot.seq, tokens = draft.len(), confirm = self.drafter.confirms(), "forced tokens");
        if self.drafter.confirms() {
            active.pending.extend(draft);
            return;
        }
        for t in draft {
            let slot = &mut self.slots[idx];
            let Some(active) = slot.active.as_mut() else { return };
            let at = slot.cached.len() + active.pending.len();
            active.history.push(t.0 as u32);
            active.pending.push(t);
            if !self.take(idx, t, at, true) {
                return;
            }
        }
    }

    fn embed(&mut self, texts: &[Vec<LlamaToken>]) -> Result<Vec<Vec<f32>>> {
        let n = self.slot_context as u32;
        if self.embed_ctx.is_none() {
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(n))
                .with_n_batch(n)
                .with_n_ubatch(n)
                .with_n_seq_max(1)
                .with_n_threads(self.config.threads)
                .with_n_threads_batch(self.config.threads)
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Mean);
            let created = {
                let _guard = self.create_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                self.model.new_context(self.backend, params)
            };
            let ctx =
                created.map_err(|e| Error::Backend { what: format!("cannot create an embedding context: {e}") })?;
            self.embed_ctx = Some(ctx);
        }
        let Some(ctx) = self.embed_ctx.as_mut() else { return Err(Error::WorkerStopped) };
        let mut batch = LlamaBatch::new(n as usize, 1);
        let mut out = Vec::with_capacity(texts.len());
        for tokens in texts {
            ctx.clear_kv_cache();
            batch.clear();
            for (pos, &t) in tokens.iter().enumerate() {
                batch.add(t, pos as i32, &[0], true).map_err(|e| Error::Decode { reason: e.to_string() })?;
            }
            ctx.decode(&mut batch).map_err(|e| Error::Decode { reason: e.to_string() })?;
            let emb = ctx.embeddings_seq_ith(0).map_err(|e| Error::Decode { reason: e.to_string() })?;
            let norm = emb.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.push(if norm > 0.0 { emb.iter().map(|x| x / norm).collect() } else { emb.to_vec() });
        }
        Ok(out)
    }
}

/// Ends the slot's request, if any, with a decode error.
fn fail(slot: &mut Slot, reason: String) {
    if let Some(active) = slot.active.take() {
        active.end(Err(Error::Decode { reason }));
    }
}

fn finish(slot: &mut Slot, reason: FinishReason) {
    let Some(mut active) = slot.active.take() else { return };
    let rest = active.text.finish();
    active.sink.text(rest);
    let end = Instant::now();
    let first = active.first_token.unwrap_or(end);
    let completion = Completion {
        text: active.text.text().to_owned(),
        logprobs: active.logprobs.take(),
        redactions: Vec::new(),
        finish_reason: reason,
        usage: Usage {
            prompt_tokens: active.prompt.len(),
            cached_prompt_tokens: active.cached_prompt_tokens,
            completion_tokens: active.generated,
            forced_tokens: active.forced,
            time_to_first_token: first.duration_since(active.submitted),
            total_time: end.duration_since(active.submitted),
        },
    };
    tracing::trace!(seq = slot.seq, ?reason, tokens = active.generated, "request finished");
    active.end(Ok(completion));
}

impl Active {
    /// Ends the request: out of the lane's load count first, so that a caller who reacts to the answer with a
    /// new request sees the lane as free, then the answer.
    fn end(self, result: Result<Completion>) {
        let Active { sink, _ticket: ticket, .. } = self;
        drop(ticket);
        sink.finish(result);
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A 2-core machine's detector, last switched long ago.
    fn two_cores() -> (Contention, Instant) {
        let start = Instant::now();
        let detector = Contention {
            others: VecDeque::new(),
            last_switch: start.checked_sub(Duration::from_secs(10)).unwrap_or(start),
            cores: 2,
            cpus: 2,
            readable: true,
        };
        (detector, start)
    }

    /// Feeds running counts taken every `gap` ms while 2 threads decode; the last decision.
    fn feed(detector: &mut Contention, start: Instant, gap: u64, running: &[usize]) -> Option<i32> {
        let mut last = None;
        for (i, &r) in running.iter().enumerate() {
            last = detector.decide(start + Duration::from_millis(gap * (i as u64 + 1)), r, 2, 2);
        }
        last
    }

    #[test]
    fn a_busy_process_moves_the_lane_to_fewer_threads() {
        let (mut detector, start) = two_cores();
        // Ours (2) and one busy process in every sample of slow prefill steps.
        assert_eq!(feed(&mut detector, start, 100, &[3, 3, 3, 3]), Some(1));
        let (mut detector, start) = two_cores();
        // Once in a while the other process sleeps, or ours is between steps: still busy.
        assert_eq!(feed(&mut detector, start, 20, &[3, 3, 2, 3, 3, 3, 3, 2, 3, 3, 3, 3, 3, 3, 3, 4]), Some(1));
    }

    #[test]
    fn the_hosts_short_bursts_do_not() {
        // Measured in the trip planner on an idle machine: the host's threads (a tool, a reply parsed, the
        // next prompt prepared) ran in two of the four samples of a window of prefill steps.
        let (mut detector, start) = two_cores();
        assert_eq!(feed(&mut detector, start, 100, &[2, 4, 2, 4]), None);
        let (mut detector, start) = two_cores();
        assert_eq!(feed(&mut detector, start, 80, &[2, 2, 2, 2, 6]), None);
        let (mut detector, start) = two_cores();
        assert_eq!(feed(&mut detector, start, 120, &[3, 2, 5]), None);
    }

    #[test]
    fn the_lane_waits_for_a_window_of_samples() {
        let (mut detector, start) = two_cores();
        // Busy, but the samples span less than SPAN.
        assert_eq!(feed(&mut detector, start, 10, &[3, 3, 3, 3, 3]), None);
        // And not within SETTLE of the last switch.
        let (mut detector, start) = two_cores();
        detector.last_switch = start;
        assert_eq!(feed(&mut detector, start, 100, &[3, 3, 3, 3]), None);
    }
}
