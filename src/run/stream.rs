//! A run as one stream of what happens in it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use futures::{FutureExt, Stream};
use serde_json::Value;

use super::{CallIds, ModelCallEvent, NodeEvent, RunContext, RunEvent, ToolCallEvent};
use crate::{Error, Result};

/// One thing that happened in a run, from a [`RunStream`]: a node or a call started, a specialist wrote some
/// text, a call or a node finished, and at the end the run's output or its error.
///
/// The `…Finished` updates and [`Event`](Self::Event) carry the same [`RunEvent`]s the run's recorders
/// receive; the `…Started` updates and [`Token`](Self::Token) exist only in the stream. Every update of a
/// call carries the call's [`CallIds`], so a reader can tell parallel branches apart.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunUpdate<T> {
    /// A graph node (a team's step, a branch) started; `ids.node` is its path. Its
    /// [`NodeFinished`](Self::NodeFinished) has the same `ids.id`.
    NodeStarted {
        /// The node's ids.
        ids: CallIds,
    },
    /// A graph node finished (succeeded or failed after its tries).
    NodeFinished(NodeEvent),
    /// A model call started. Its tokens and its [`ModelCallFinished`](Self::ModelCallFinished) carry the same
    /// id.
    ModelCallStarted {
        /// The call's ids.
        ids: CallIds,
        /// Who makes the call: a specialist's name, `team/manager`, `router`, `host`.
        specialist: String,
        /// The model's name.
        model: String,
        /// The step of the caller's loop.
        step: usize,
    },
    /// Text a model wrote, as it writes it. The pieces of one call add up to its output. Pieces the reader
    /// has not taken yet are joined into one. Only models that
    /// [stream tokens](crate::model::LanguageModel::streams_tokens) (local ones: `LlamaModel`) send them; the
    /// text of any other call comes whole with [`ModelCallFinished`](Self::ModelCallFinished).
    Token {
        /// The id of the model call ([`CallIds::id`] of its [`ModelCallStarted`](Self::ModelCallStarted)).
        call: u64,
        /// Who makes the call, as in `ModelCallStarted`.
        specialist: String,
        /// The text.
        text: String,
    },
    /// A model call finished: its output, tool calls, usage and outcome.
    ModelCallFinished(ModelCallEvent),
    /// A specialist called a tool.
    ToolCallStarted {
        /// The call's ids; its [`ToolCallFinished`](Self::ToolCallFinished) has the same.
        ids: CallIds,
        /// The specialist that calls it.
        specialist: String,
        /// The tool's name.
        tool: String,
        /// The arguments the model wrote.
        arguments: Value,
    },
    /// A tool call finished: its result or its error.
    ToolCallFinished(ToolCallEvent),
    /// Any other event recorded in the run (a redaction, a shadow comparison, ...).
    Event(RunEvent),
    /// The run finished with this output. It is the last update.
    Finished(T),
    /// The run failed with this error. It is the last update.
    Failed(Error),
}

impl<T> RunUpdate<T> {
    /// Whether this is the last update of the run ([`Finished`](Self::Finished) or [`Failed`](Self::Failed)).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Finished(_) | Self::Failed(_))
    }
}

/// An update of the run's own (no output yet).
pub(crate) type Update = RunUpdate<Infallible>;

fn cast<T>(update: Update) -> RunUpdate<T> {
    match update {
        RunUpdate::NodeStarted { ids } => RunUpdate::NodeStarted { ids },
        RunUpdate::NodeFinished(e) => RunUpdate::NodeFinished(e),
        RunUpdate::ModelCallStarted { ids, specialist, model, step } => {
            RunUpdate::ModelCallStarted { ids, specialist, model, step }
        }
        RunUpdate::Token { call, specialist, text } => RunUpdate::Token { call, specialist, text },
        RunUpdate::ModelCallFinished(e) => RunUpdate::ModelCallFinished(e),
        RunUpdate::ToolCallStarted { ids, specialist, tool, arguments } => {
            RunUpdate::ToolCallStarted { ids, specialist, tool, arguments }
        }
        RunUpdate::ToolCallFinished(e) => RunUpdate::ToolCallFinished(e),
        RunUpdate::Event(e) => RunUpdate::Event(e),
        RunUpdate::Finished(never) => match never {},
        RunUpdate::Failed(e) => RunUpdate::Failed(e),
    }
}

/// Where a streamed run's updates wait for the reader. Held by the run's [`RunContext`].
pub(crate) struct Live {
    queue: Mutex<VecDeque<Update>>,
    waker: AtomicWaker,
    tokens: AtomicBool,
}

impl Live {
    fn new() -> Self {
        Self { queue: Mutex::new(VecDeque::new()), waker: AtomicWaker::new(), tokens: AtomicBool::new(true) }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Update>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether model calls should stream their text into the run's updates.
    pub(crate) fn wants_tokens(&self) -> bool {
        self.tokens.load(Ordering::Relaxed)
    }

    /// Queues an update for the reader. A token that follows another of the same call still unread is
    /// joined to it.
    pub(crate) fn push(&self, update: Update) {
        {
            let mut queue = self.queue();
            if let (RunUpdate::Token { call, text, .. }, Some(RunUpdate::Token { call: last, text: unread, .. })) =
                (&update, queue.back_mut())
            {
                if call == last {
                    unread.push_str(text);
                    return;
                }
            }
            queue.push_back(update);
        }
        self.waker.wake();
    }

    /// A recorded event, as the update it stands for.
    pub(crate) fn recorded(&self, event: RunEvent) {
        self.push(match event {
            RunEvent::Node(e) => RunUpdate::NodeFinished(e),
            RunEvent::ModelCall(e) => RunUpdate::ModelCallFinished(e),
            RunEvent::ToolCall(e) => RunUpdate::ToolCallFinished(e),
            other => RunUpdate::Event(other),
        });
    }

    fn pop(&self) -> Option<Update> {
        self.queue().pop_front()
    }
}

/// A run as a [`Stream`] of [`RunUpdate`]s, ending with its output or its error; from
/// [`Agent::run_stream`](crate::agent::Agent::run_stream), [`Graph::run_stream`](crate::graph::Graph::run_stream)
/// or [`RunStream::new`].
///
/// - **It is the run.** The run makes progress while the stream is polled, in the reader's task: no runtime
///   and no spawned task are needed (it works under tokio, async-std or `futures::executor`).
/// - **Bounded.** The run is only polled again once the updates it reported have been read, so a slow
///   reader holds the run back instead of piling updates up; text a model writes meanwhile is joined into
///   one [`Token`](RunUpdate::Token) (a model on another thread goes on generating; see
///   [`TokenStream`](crate::model::TokenStream)).
/// - **Dropping it cancels the run**, as dropping the run's future does: nodes still running are dropped and
///   their model calls stopped.
/// - The run's recorders (a ledger, a [`MemoryRecorder`](crate::run::MemoryRecorder)) still receive every
///   event as well.
///
/// ```
/// use futures::StreamExt;
/// use slm_agents::graph::Graph;
/// use slm_agents::run::{RunContext, RunUpdate};
///
/// # fn main() -> slm_agents::Result<()> {
/// let mut g = Graph::builder::<String>();
/// let text = g.input();
/// let shout = g.add(|s: String| async move { Ok::<_, slm_agents::Error>(s.to_uppercase()) }).named("shout").after(&text);
/// let graph = g.output(shout).build()?;
///
/// let mut updates = graph.run_stream("hello".into(), &RunContext::new());
/// let mut nodes = Vec::new();
/// let output = futures::executor::block_on(async {
///     while let Some(update) = updates.next().await {
///         match update {
///             RunUpdate::NodeStarted { ids } => nodes.push(ids.node.unwrap_or_default()),
///             RunUpdate::Finished(out) => return Ok(out),
///             RunUpdate::Failed(e) => return Err(e),
///             _ => {}
///         }
///     }
///     unreachable!("a run stream ends with its output or its error")
/// })?;
/// assert_eq!(output, "HELLO");
/// assert_eq!(nodes, ["shout"]);
/// # Ok(()) }
/// ```
#[must_use = "a run stream does nothing unless polled"]
pub struct RunStream<'a, T> {
    run: Option<BoxFuture<'a, Result<T>>>,
    live: Arc<Live>,
    result: Option<Result<T>>,
}

impl<T> std::fmt::Debug for RunStream<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStream")
            .field("running", &self.run.is_some())
            .field("queued", &self.live.queue().len())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Send + 'a> RunStream<'a, T> {
    /// Streams the work of `run`, given a copy of `ctx` whose model calls, tool calls and graph nodes report
    /// to the stream (and still to `ctx`'s recorders). For an agent, [`Agent::run_stream`](crate::agent::Agent::run_stream)
    /// does this; use it for host code that makes several calls:
    ///
    /// ```no_run
    /// use slm_agents::model::{LanguageModel, Message, Request};
    /// use slm_agents::run::{RunContext, RunStream};
    ///
    /// # fn demo(model: &dyn LanguageModel) {
    /// let request = Request::chat([Message::user("Name three rivers.")]).with_max_tokens(32);
    /// let updates = RunStream::new(&RunContext::new(), |ctx| async move {
    ///     Ok(ctx.complete(model, request).await?.text)
    /// });
    /// # }
    /// ```
    pub fn new<F, Fut>(ctx: &RunContext, run: F) -> Self
    where
        F: FnOnce(RunContext) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'a,
    {
        let live = Arc::new(Live::new());
        let ctx = ctx.clone().with_live(Arc::clone(&live));
        Self { run: Some(run(ctx).boxed()), live, result: None }
    }

    /// Whether model calls stream their text as [`Token`](RunUpdate::Token) updates (default `true`). Without
    /// them, model calls are made whole, and their text comes with
    /// [`ModelCallFinished`](RunUpdate::ModelCallFinished).
    pub fn tokens(self, on: bool) -> Self {
        self.live.tokens.store(on, Ordering::Relaxed);
        self
    }

    /// Runs to the end, passing every update but the last to `each`, and returns the output.
    ///
    /// # Errors
    /// The run's error.
    pub async fn for_each_update(mut self, mut each: impl FnMut(RunUpdate<T>)) -> Result<T> {
        use futures::StreamExt;
        while let Some(update) = self.next().await {
            match update {
                RunUpdate::Finished(out) => return Ok(out),
                RunUpdate::Failed(e) => return Err(e),
                other => each(other),
            }
        }
        Err(Error::WorkerStopped)
    }
}

// The output is never pinned: it is only moved out once the run has finished.
impl<T> Unpin for RunStream<'_, T> {}

impl<T> Stream for RunStream<'_, T> {
    type Item = RunUpdate<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RunUpdate<T>>> {
        let this = self.get_mut();
        // Updates pushed while the run is polled here need no wake-up: they are read below.
        let _ = this.live.waker.take();
        loop {
            if let Some(update) = this.live.pop() {
                return Poll::Ready(Some(cast(update)));
            }
            if let Some(result) = this.result.take() {
                return Poll::Ready(Some(match result {
                    Ok(out) => RunUpdate::Finished(out),
                    Err(e) => RunUpdate::Failed(e),
                }));
            }
            let Some(run) = this.run.as_mut() else {
                return Poll::Ready(None);
            };
            match run.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    this.run = None;
                    this.result = Some(result);
                }
                Poll::Pending => {
                    // Updates from other threads (a model's worker, a spawned task) wake the reader.
                    this.live.waker.register(cx.waker());
                    if this.live.queue().is_empty() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<T> futures::stream::FusedStream for RunStream<'_, T> {
    fn is_terminated(&self) -> bool {
        self.run.is_none() && self.result.is_none() && self.live.queue().is_empty()
    }
}
