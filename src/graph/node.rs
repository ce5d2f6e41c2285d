//! What a graph node is: anything with a typed async `run`.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::agent::Agent;
use crate::run::RunContext;
use crate::{Error, Result};

/// A step of a graph: typed input in, typed output out.
///
/// Every [`Agent`] is a node — specialists, teams and [`Graph`](super::Graph)s among them. Plain async functions
/// and closures become nodes through [`IntoNode`] when added to a graph.
///
/// ```
/// use slm_agents::graph::Node;
/// use slm_agents::run::RunContext;
///
/// struct Double;
///
/// #[async_trait::async_trait]
/// impl Node for Double {
///     type Input = u32;
///     type Output = u32;
///     fn name(&self) -> String {
///         "double".into()
///     }
///     async fn invoke(&self, input: u32, _ctx: &RunContext) -> slm_agents::Result<u32> {
///         Ok(input * 2)
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Node: Send + Sync + 'static {
    /// What the node is given (for fan-in, a tuple).
    type Input: Send + 'static;
    /// What it produces.
    type Output: Send + Sync + 'static;

    /// The node's name in reports, errors and diagrams (override with `.named(..)` when adding it).
    fn name(&self) -> String;

    /// Runs the node. (Named `invoke`, not `run`, so that it never clashes with [`Agent::run`] on an agent,
    /// which is a node too.)
    async fn invoke(&self, input: Self::Input, ctx: &RunContext) -> Result<Self::Output>;
}

#[async_trait::async_trait]
impl<A> Node for A
where
    A: Agent + 'static,
    A::Output: Sync,
{
    type Input = A::Input;
    type Output = A::Output;

    fn name(&self) -> String {
        Agent::name(self)
    }

    async fn invoke(&self, input: A::Input, ctx: &RunContext) -> Result<A::Output> {
        Agent::run(self, input, ctx).await
    }
}

/// Converts something into a [`Node`] when it is added to a graph: a node itself, or an async function or
/// closure `Fn(I) -> impl Future<Output = Result<O, E>>`.
///
/// The `M` parameter only tells the two kinds apart; it never needs to be written.
///
/// ```
/// use slm_agents::graph::Graph;
///
/// async fn shout(s: String) -> Result<String, std::io::Error> {
///     Ok(s.to_uppercase())
/// }
///
/// let mut g = Graph::builder::<String>();
/// let text = g.input();
/// let loud = g.add(shout).after(&text); // an async fn becomes a node
/// let graph = g.output(loud).build().unwrap();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a graph node",
    label = "not a node",
    note = "a node is a `Specialist`, a `Graph`, a type implementing `Node`, or an async function or closure taking one \
            input and returning `Result<Output, E>`"
)]
pub trait IntoNode<M>: Send + Sync + 'static {
    /// The node it becomes.
    type Node: Node;
    /// Makes the node.
    fn into_node(self) -> Self::Node;
}

/// Marks nodes that already implement [`Node`].
#[derive(Debug)]
pub enum IsNode {}

/// Marks async functions and closures.
#[derive(Debug)]
pub enum IsFn {}

impl<N: Node> IntoNode<IsNode> for N {
    type Node = N;
    fn into_node(self) -> N {
        self
    }
}

/// An async function or closure as a node; made by [`IntoNode`].
pub struct FnNode<F, I, O, E> {
    f: F,
    _types: PhantomData<fn(I) -> Result<O, E>>,
}

impl<F, I, O, E> std::fmt::Debug for FnNode<F, I, O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnNode").field("f", &std::any::type_name::<F>()).finish()
    }
}

impl<F, Fut, I, O, E> IntoNode<(IsFn, I, O, E)> for F
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    I: Send + 'static,
    O: Send + Sync + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    type Node = FnNode<F, I, O, E>;
    fn into_node(self) -> Self::Node {
        FnNode { f: self, _types: PhantomData }
    }
}

#[async_trait::async_trait]
impl<F, Fut, I, O, E> Node for FnNode<F, I, O, E>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    I: Send + 'static,
    O: Send + Sync + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    type Input = I;
    type Output = O;

    fn name(&self) -> String {
        "fn".to_owned()
    }

    async fn invoke(&self, input: I, _ctx: &RunContext) -> Result<O> {
        (self.f)(input).await.map_err(|e| {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            match e.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::Node { node: String::new(), source: other },
            }
        })
    }
}

/// A node behind an `Arc`, so that one node (a specialist, say) can be added to several graphs.
#[async_trait::async_trait]
impl<N: Node> Node for Arc<N> {
    type Input = N::Input;
    type Output = N::Output;
    fn name(&self) -> String {
        (**self).name()
    }
    async fn invoke(&self, input: N::Input, ctx: &RunContext) -> Result<N::Output> {
        (**self).invoke(input, ctx).await
    }
}
