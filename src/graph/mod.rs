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

mod exec;
mod node;

use std::any::Any;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

pub use exec::{NodeOutcome, NodeReport, RunReport};
pub use node::{IntoNode, IsAgent, IsFn};

use crate::agent::Agent;
use crate::run::RunContext;
use crate::{Error, Result};

/// A value flowing between nodes, type-erased inside the graph only (handles keep the types).
type Value = Arc<dyn Any + Send + Sync>;

static GRAPH_IDS: AtomicU64 = AtomicU64::new(1);

/// A typed reference to a node's output, from [`GraphBuilder::input`] or [`PendingNode::after`].
///
/// Handles are cheap to copy. They belong to the builder that made them; using one in another builder is
/// reported by [`GraphOutput::build`].
pub struct Handle<T> {
    graph: u64,
    node: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle<{}>(#{})", std::any::type_name::<T>(), self.node)
    }
}

/// The route a branch chose, from [`GraphBuilder::branch`]; nodes follow a route with [`PendingNode::on`].
pub struct BranchHandle<R> {
    handle: Handle<R>,
}

impl<R> Clone for BranchHandle<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for BranchHandle<R> {}
impl<R> Debug for BranchHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BranchHandle<{}>(#{})", std::any::type_name::<R>(), self.handle.node)
    }
}

/// The handles a node is added after: one `&Handle<T>` (the node's input is `T`), a tuple of up to eight
/// (its input is the tuple of their types), or a slice of handles of one type, for fan-in decided at run time
/// (its input is a `Vec`). Values are cloned into each node that needs them.
///
/// ```
/// use slm_agents::graph::Graph;
///
/// let mut g = Graph::builder::<u32>();
/// let n = g.input();
/// let text = g.add(|n: u32| async move { Ok::<_, std::io::Error>(n.to_string()) }).after(&n);
/// // A tuple of handles gives the node a tuple, in the same order.
/// let both = g.add(|(n, s): (u32, String)| async move { Ok::<_, std::io::Error>(format!("{n}/{s}")) }).after((&n, &text));
/// # let _ = g.output(both).build().unwrap();
/// ```
#[diagnostic::on_unimplemented(
    message = "a node can only be added after a `&Handle<T>` or a tuple of `&Handle<_>`s",
    label = "not handles"
)]
pub trait Deps {
    /// The node input these handles make.
    type Output: Send + 'static;
    #[doc(hidden)]
    fn handles(&self) -> Vec<(u64, usize)>;
    #[doc(hidden)]
    fn gather(values: &[Value]) -> Option<Self::Output>;
}

impl<T: Clone + Send + Sync + 'static> Deps for &Handle<T> {
    type Output = T;
    fn handles(&self) -> Vec<(u64, usize)> {
        vec![(self.graph, self.node)]
    }
    fn gather(values: &[Value]) -> Option<T> {
        values.first()?.downcast_ref::<T>().cloned()
    }
}

impl<T: Clone + Send + Sync + 'static> Deps for &[Handle<T>] {
    type Output = Vec<T>;
    fn handles(&self) -> Vec<(u64, usize)> {
        self.iter().map(|h| (h.graph, h.node)).collect()
    }
    fn gather(values: &[Value]) -> Option<Vec<T>> {
        values.iter().map(|v| v.downcast_ref::<T>().cloned()).collect()
    }
}

macro_rules! tuple_deps {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Clone + Send + Sync + 'static),+> Deps for ($(&Handle<$name>,)+) {
            type Output = ($($name,)+);
            fn handles(&self) -> Vec<(u64, usize)> {
                vec![$((self.$idx.graph, self.$idx.node)),+]
            }
            fn gather(values: &[Value]) -> Option<Self::Output> {
                Some(($(values.get($idx)?.downcast_ref::<$name>()?.clone(),)+))
            }
        }
    };
}
tuple_deps!(A 0);
tuple_deps!(A 0, B 1);
tuple_deps!(A 0, B 1, C 2);
tuple_deps!(A 0, B 1, C 2, D 3);
tuple_deps!(A 0, B 1, C 2, D 3, E 4);
tuple_deps!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_deps!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_deps!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

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

/// Builds a [`Graph`]; from [`Graph::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct GraphBuilder<I> {
    id: u64,
    nodes: Vec<NodeSpec>,
    /// Handles of another builder that were used here.
    foreign: Vec<String>,
    _input: PhantomData<fn(I)>,
}

impl<I> Debug for GraphBuilder<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphBuilder").field("nodes", &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()).finish()
    }
}

/// A node being added: name it, set its timeout, retries or route, then place it with
/// [`after`](Self::after).
#[must_use = "a node is added to the graph only by `after`"]
pub struct PendingNode<'g, I, N> {
    builder: &'g mut GraphBuilder<I>,
    node: N,
    name: Option<String>,
    timeout: Option<Duration>,
    retry: Retry,
    condition: Option<Condition>,
    condition_dep: Option<(u64, usize)>,
}

impl<I, N: Agent> Debug for PendingNode<'_, I, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingNode").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<I, N: Agent> PendingNode<'_, I, N> {
    /// Names the node (default: the node's own name, e.g. a specialist's).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Fails the node (with [`Error::NodeTimeout`]) if one try takes longer than this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Tries the node again when it fails (timeouts included); panics are not retried.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Runs the node only when `branch` chose `route`; otherwise it is skipped.
    pub fn on<R>(mut self, branch: &BranchHandle<R>, route: R) -> Self
    where
        R: PartialEq + Debug + Send + Sync + 'static,
    {
        let label = format!("{route:?}");
        self.condition_dep = Some((branch.handle.graph, branch.handle.node));
        self.condition = Some(Condition {
            branch: branch.handle.node,
            matches: Arc::new(move |v: &Value| v.downcast_ref::<R>().is_some_and(|r| *r == route)),
            label,
        });
        self
    }

    /// Adds the node after `deps`: one `&Handle<T>` when the node takes a `T`, or a tuple of handles when it
    /// takes a tuple. Returns the handle of its output.
    pub fn after<D>(self, deps: D) -> Handle<N::Output>
    where
        D: Deps<Output = N::Input>,
        N: 'static,
        N::Output: Sync,
    {
        let node = Arc::new(self.node);
        let explicit = self.name.is_some();
        let name = self.name.unwrap_or_else(|| node.name());
        let runner_name = name.clone();
        let runner: Runner = Arc::new(move |values: Vec<Value>, ctx: RunContext| {
            let node = Arc::clone(&node);
            let name = runner_name.clone();
            async move {
                let input = D::gather(&values)
                    .ok_or_else(|| Error::Graph { reason: format!("node `{name}` got inputs of the wrong type") })?;
                let output = node.run(input, &ctx).await?;
                Ok(Arc::new(output) as Value)
            }
            .boxed()
        });
        let mut handles = deps.handles();
        let inputs = handles.len();
        if let Some(dep) = self.condition_dep {
            handles.push(dep);
        }
        let handle = self.builder.push(name, Kind::Task(runner), handles, self.condition, self.timeout, self.retry);
        self.builder.nodes[handle.node].explicit = explicit;
        self.builder.nodes[handle.node].inputs = inputs;
        handle
    }
}

impl<I: Send + Sync + 'static> GraphBuilder<I> {
    fn new() -> Self {
        let mut b = Self {
            id: GRAPH_IDS.fetch_add(1, Ordering::Relaxed),
            nodes: Vec::new(),
            foreign: Vec::new(),
            _input: PhantomData,
        };
        b.nodes.push(NodeSpec {
            name: "input".into(),
            explicit: true,
            kind: Kind::Input,
            deps: Vec::new(),
            inputs: 0,
            condition: None,
            timeout: None,
            retry: Retry::new(1, Duration::ZERO),
        });
        b
    }

    /// The handle of the graph's input.
    pub fn input(&self) -> Handle<I> {
        Handle { graph: self.id, node: 0, _type: PhantomData }
    }

    /// Starts adding a node: any [`Agent`] (a [`Specialist`](crate::specialist::Specialist), a
    /// [`Team`](crate::agent::Team), a [`Graph`]), or an async function or closure taking one input and
    /// returning `Result<Output, E>`.
    pub fn add<M, N: IntoNode<M>>(&mut self, node: N) -> PendingNode<'_, I, N::Agent> {
        PendingNode {
            builder: self,
            node: node.into_agent(),
            name: None,
            timeout: None,
            retry: Retry::new(1, Duration::ZERO),
            condition: None,
            condition_dep: None,
        }
    }

    /// Adds a branch: `decide` reads the value of `from` and returns a route; nodes added with
    /// [`PendingNode::on`] run only on their route. Any `Fn(&T) -> R` works.
    pub fn branch<T, R, F>(&mut self, from: &Handle<T>, decide: F) -> BranchHandle<R>
    where
        T: Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: Fn(&T) -> R + Send + Sync + 'static,
    {
        let decide = Arc::new(decide);
        let runner: Runner = Arc::new(move |values: Vec<Value>, _ctx: RunContext| {
            let decide = Arc::clone(&decide);
            async move {
                let value = values
                    .first()
                    .and_then(|v| v.downcast_ref::<T>())
                    .ok_or_else(|| Error::Graph { reason: "a branch got an input of the wrong type".into() })?;
                Ok(Arc::new(decide(value)) as Value)
            }
            .boxed()
        });
        self.push_branch("branch", from, runner)
    }

    /// Adds a branch decided by a [`Router`](crate::router::Router) reading the value of `from` as text; the
    /// decision's reason is logged with `tracing`. Nodes follow a route with [`PendingNode::on`], as with
    /// [`branch`](Self::branch).
    pub fn route<T, R, Rt>(&mut self, from: &Handle<T>, router: Rt) -> BranchHandle<R>
    where
        T: AsRef<str> + Send + Sync + 'static,
        R: Debug + Send + Sync + 'static,
        Rt: crate::router::Router<R> + 'static,
    {
        let router = Arc::new(router);
        let runner: Runner = Arc::new(move |values: Vec<Value>, ctx: RunContext| {
            let router = Arc::clone(&router);
            async move {
                let value = values
                    .first()
                    .and_then(|v| v.downcast_ref::<T>())
                    .ok_or_else(|| Error::Graph { reason: "a router got an input of the wrong type".into() })?;
                let decision = router.route(value.as_ref(), &ctx).await?;
                tracing::info!(route = ?decision.route, confidence = decision.confidence, reason = %decision.reason, "routed");
                let reason = format!("routed to {:?}: {}", decision.route, decision.reason);
                let route = Arc::new(decision.route) as Value;
                Ok(Arc::new(Routed { route, reason: reason.into() }) as Value)
            }
            .boxed()
        });
        self.push_branch("router", from, runner)
    }

    fn push_branch<T, R>(&mut self, kind: &str, from: &Handle<T>, runner: Runner) -> BranchHandle<R> {
        let name = format!("{kind} {}", self.nodes.len());
        let handle = self.push(
            name,
            Kind::Branch(runner),
            vec![(from.graph, from.node)],
            None,
            None,
            Retry::new(1, Duration::ZERO),
        );
        BranchHandle { handle }
    }

    /// A handle to the value of whichever of `handles` ran (the others were skipped by a branch). Skipped if
    /// none ran.
    pub fn merge<T, const K: usize>(&mut self, handles: [&Handle<T>; K]) -> Handle<T>
    where
        T: Send + Sync + 'static,
    {
        let deps = handles.iter().map(|h| (h.graph, h.node)).collect();
        let name = format!("merge {}", self.nodes.len());
        self.push(name, Kind::Merge, deps, None, None, Retry::new(1, Duration::ZERO))
    }

    /// Sets the node whose value the graph returns.
    pub fn output<O: Send + Sync + 'static>(self, output: Handle<O>) -> GraphOutput<I, O> {
        GraphOutput { builder: self, output }
    }
}

impl<I> GraphBuilder<I> {
    fn push<T>(
        &mut self,
        name: String,
        kind: Kind,
        handles: Vec<(u64, usize)>,
        condition: Option<Condition>,
        timeout: Option<Duration>,
        retry: Retry,
    ) -> Handle<T> {
        // In input order, repeats kept: a node's values are gathered by position.
        let mut deps = Vec::with_capacity(handles.len());
        for (graph, node) in handles {
            if graph != self.id {
                self.foreign.push(name.clone());
            }
            deps.push(node);
        }
        let inputs = deps.len();
        self.nodes.push(NodeSpec { name, explicit: true, kind, deps, inputs, condition, timeout, retry });
        Handle { graph: self.id, node: self.nodes.len() - 1, _type: PhantomData }
    }
}

/// A builder whose output is set; [`build`](Self::build) makes the graph.
#[must_use = "a graph is made by `build`"]
pub struct GraphOutput<I, O> {
    builder: GraphBuilder<I>,
    output: Handle<O>,
}

impl<I, O> Debug for GraphOutput<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphOutput").field("builder", &self.builder).field("output", &self.output).finish()
    }
}

impl<I: Send + Sync + 'static, O: Send + Sync + 'static> GraphOutput<I, O> {
    /// Checks the graph and makes it.
    ///
    /// # Errors
    /// [`Error::Graph`] if a handle of another builder was used, or names are not unique.
    pub fn build(self) -> Result<Graph<I, O>> {
        let mut b = self.builder;
        if let Some(name) = b.foreign.first() {
            return Err(Error::Graph { reason: format!("node `{name}` was added after a handle of another graph") });
        }
        if self.output.graph != b.id {
            return Err(Error::Graph { reason: "the output handle belongs to another graph".into() });
        }
        let mut names = std::collections::HashSet::new();
        for n in b.nodes.iter().filter(|n| n.explicit) {
            if !names.insert(n.name.clone()) {
                return Err(Error::Graph { reason: format!("two nodes are named `{}`", n.name) });
            }
        }
        // Derived names (every closure is a `fn`) get a number when they repeat.
        for (i, n) in b.nodes.iter_mut().enumerate().filter(|(_, n)| !n.explicit) {
            if !names.insert(n.name.clone()) {
                n.name = format!("{} #{i}", n.name);
                names.insert(n.name.clone());
            }
        }
        Ok(Graph {
            inner: Arc::new(GraphInner { nodes: b.nodes, output: self.output.node }),
            name: "graph".into(),
            _types: PhantomData,
        })
    }
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

    /// The graph as a Mermaid flowchart, to paste into Markdown.
    pub fn to_mermaid(&self) -> String {
        let nodes = &self.inner.nodes;
        let mut out = String::from("flowchart TD\n");
        for (i, n) in nodes.iter().enumerate() {
            let label = n.name.replace('"', "'");
            let shape = match n.kind {
                Kind::Input => format!("n{i}([\"{label}\"])"),
                Kind::Branch(_) => format!("n{i}{{\"{label}\"}}"),
                Kind::Merge => format!("n{i}((\"{label}\"))"),
                Kind::Task(_) if i == self.inner.output => format!("n{i}[[\"{label}\"]]"),
                Kind::Task(_) => format!("n{i}[\"{label}\"]"),
            };
            out.push_str(&format!("    {shape}\n"));
        }
        for (i, n) in nodes.iter().enumerate() {
            let mut seen = Vec::new();
            for &d in &n.deps {
                if seen.contains(&d) {
                    continue;
                }
                seen.push(d);
                match &n.condition {
                    Some(c) if c.branch == d => {
                        out.push_str(&format!("    n{d} -. {} .-> n{i}\n", c.label.replace('"', "'")))
                    }
                    _ => out.push_str(&format!("    n{d} --> n{i}\n")),
                }
            }
        }
        out
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
