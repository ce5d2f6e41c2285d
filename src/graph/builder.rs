//! Building a graph: adding nodes after the handles they read, branches, routes and merges.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::{
    BranchHandle, Condition, Deps, Graph, GraphInner, Handle, IntoNode, Kind, NodeSpec, Retry, Routed, Runner, Value,
    GRAPH_IDS,
};
use crate::agent::Agent;
use crate::run::RunContext;
use crate::{Error, Result};

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
    pub(super) fn new() -> Self {
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
