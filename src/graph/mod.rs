//! A typed task graph: host code composes specialists, functions and whole graphs; wrong wiring does not
//! compile.
//!
//! Handles carry the type of the value a node produces. A node is added with the handles it needs — one, or a
//! tuple for fan-in — and the compiler checks that their types are the node's input. A handle exists only once
//! its node has been added after existing handles, so a cycle cannot be written. Independent nodes run
//! concurrently; no particular async runtime is required.
//!
//! ```
//! use slm_agents::graph::Graph;
//! use slm_agents::run::RunContext;
//!
//! # fn main() -> slm_agents::Result<()> {
//! let mut g = Graph::builder::<String>();
//! let request = g.input();
//! let words = g.add(|s: String| async move { Ok::<_, slm_agents::Error>(s.split_whitespace().count()) }).named("count words").after(&request);
//! let shout = g.add(|s: String| async move { Ok::<_, slm_agents::Error>(s.to_uppercase()) }).named("shout").after(&request);
//! let both = g
//!     .add(|(n, s): (usize, String)| async move { Ok::<_, slm_agents::Error>(format!("{s} ({n} words)")) })
//!     .named("compose")
//!     .after((&words, &shout));
//! let graph = g.output(both).build()?;
//!
//! let out = futures::executor::block_on(graph.run("plan my weekend".into(), &RunContext::new()))?;
//! assert_eq!(out, "PLAN MY WEEKEND (3 words)");
//! println!("{}", graph.to_mermaid());
//! # Ok(()) }
//! ```
//!
//! A branch picks which of several typed paths runs; nodes on the other paths are skipped, and so is
//! everything that depends only on them. [`GraphBuilder::merge`] takes the value of whichever path ran:
//!
//! ```
//! use slm_agents::graph::Graph;
//! use slm_agents::run::RunContext;
//!
//! #[derive(Debug, Clone, PartialEq)]
//! enum Route { Short, Long }
//!
//! # fn main() -> slm_agents::Result<()> {
//! let mut g = Graph::builder::<String>();
//! let text = g.input();
//! let route = g.branch(&text, |t: &String| if t.len() < 10 { Route::Short } else { Route::Long });
//! let short = g.add(|t: String| async move { Ok::<_, slm_agents::Error>(t) }).on(&route, Route::Short).after(&text);
//! let long = g.add(|t: String| async move { Ok::<_, slm_agents::Error>(format!("{}...", &t[..10])) }).on(&route, Route::Long).after(&text);
//! let out = g.merge([&short, &long]);
//! let graph = g.output(out).build()?;
//! let run = |s: &str| futures::executor::block_on(graph.run(s.into(), &RunContext::new()));
//! assert_eq!(run("hi")?, "hi");
//! assert_eq!(run("a rather long sentence")?, "a rather l...");
//! # Ok(()) }
//! ```
//!
#![doc = include_str!("../../docs/graph.md")]

mod builder;
mod exec;
mod handle;
mod mermaid;
mod node;

use std::any::Any;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use builder::{GraphBuilder, GraphOutput, PendingNode};
pub use exec::{NodeOutcome, NodeReport, RunReport};
pub use handle::{BranchHandle, Deps, Handle};
pub use node::{IntoNode, IsAgent, IsFn};

use crate::agent::Agent;
use crate::run::{RunContext, RunStream};
use crate::{Error, Result};

/// A value flowing between nodes, type-erased inside the graph only (handles keep the types).
type Value = Arc<dyn Any + Send + Sync>;

static GRAPH_IDS: AtomicU64 = AtomicU64::new(1);

/// How often a failing node is tried again, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included (1 = no retry).
    pub attempts: u32,
    /// The wait before the second try; doubled before each later one.
    pub backoff: Duration,
}

impl Retry {
    /// Up to `attempts` tries in all, waiting `backoff`, then twice that, and so on.
    pub const fn new(attempts: u32, backoff: Duration) -> Self {
        Self { attempts, backoff }
    }
}

/// What runs a node: its input gathered from its dependencies' values.
type Runner = Arc<dyn Fn(Vec<Value>, RunContext) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

#[derive(Clone)]
enum Kind {
    Input,
    Task(Runner),
    /// Decides a route; the runner returns the route value.
    Branch(Runner),
    /// Takes the value of the one dependency that ran.
    Merge,
}

/// What a router's branch node holds: the route, and why (for the nodes on it).
struct Routed {
    route: Value,
    reason: Arc<str>,
}

/// A route condition: run only if the branch node's value equals this.
#[derive(Clone)]
struct Condition {
    branch: usize,
    matches: Arc<dyn Fn(&Value) -> bool + Send + Sync>,
    label: String,
}

#[derive(Clone)]
struct NodeSpec {
    name: String,
    /// Whether the host named it (duplicates are then an error) or the name was derived.
    explicit: bool,
    kind: Kind,
    deps: Vec<usize>,
    /// How many of `deps` are the node's inputs (a route condition adds its branch after them).
    inputs: usize,
    condition: Option<Condition>,
    timeout: Option<Duration>,
    retry: Retry,
}

struct GraphInner {
    nodes: Vec<NodeSpec>,
    output: usize,
}

/// A built task graph from input `I` to output `O`. Cheap to clone; run it as often as you like, even
/// concurrently. A graph is itself an [`Agent`], so graphs nest.
pub struct Graph<I, O> {
    inner: Arc<GraphInner>,
    name: String,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O> Clone for Graph<I, O> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), name: self.name.clone(), _types: PhantomData }
    }
}

impl<I, O> Debug for Graph<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("name", &self.name)
            .field("nodes", &self.inner.nodes.iter().map(|n| &n.name).collect::<Vec<_>>())
            .finish()
    }
}

impl Graph<(), ()> {
    /// Starts building a graph whose input is an `I`.
    pub fn builder<I: Send + Sync + 'static>() -> GraphBuilder<I> {
        GraphBuilder::new()
    }
}

impl<I: Send + Sync + 'static, O: Clone + Send + Sync + 'static> Graph<I, O> {
    /// Names the graph (its name as a node of another graph).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs the graph. Dropping the returned future cancels every node still running.
    ///
    /// # Errors
    /// The first node error, as [`Error::Node`] (naming the node, with the cause as its source),
    /// [`Error::NodeTimeout`] or [`Error::NodePanicked`]; [`Error::Graph`] if the output node was skipped.
    pub async fn run(&self, input: I, ctx: &RunContext) -> Result<O> {
        self.run_with_report(input, ctx).await.0
    }

    /// Runs the graph as a stream of what happens: nodes as they start and finish, model and tool calls, the
    /// text of the specialist that is writing, then the output or the error (see [`RunStream`]). Polling the
    /// stream runs the graph; dropping it cancels every node still running.
    pub fn run_stream(&self, input: I, ctx: &RunContext) -> RunStream<'_, O> {
        RunStream::new(ctx, move |ctx| async move { self.run(input, &ctx).await })
    }

    /// Runs the graph and also returns the report of every node: start, end and outcome.
    pub async fn run_with_report(&self, input: I, ctx: &RunContext) -> (Result<O>, RunReport) {
        let (value, report) = exec::run(&self.inner.nodes, self.inner.output, Arc::new(input), ctx).await;
        let out = value.and_then(|v| {
            v.downcast_ref::<O>()
                .cloned()
                .ok_or_else(|| Error::Graph { reason: "the output node produced a value of the wrong type".into() })
        });
        (out, report)
    }
}

#[async_trait::async_trait]
impl<I: Send + Sync + 'static, O: Clone + Send + Sync + 'static> Agent for Graph<I, O> {
    type Input = I;
    type Output = O;

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn run(&self, input: I, ctx: &RunContext) -> Result<O> {
        Graph::run(self, input, ctx).await
    }
}
