//! What can be a graph node: any [`Agent`], or an async function or closure (made an agent by
//! [`from_fn`](crate::agent::from_fn)).

use std::future::Future;

use crate::agent::{from_fn, Agent, FnAgent};

/// Converts something into the [`Agent`] a graph runs as a node: an agent itself (a specialist, a team, a
/// graph, an `Arc` of one), or an async function or closure `Fn(I) -> impl Future<Output = Result<O, E>>`.
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
    note = "a node is an `Agent` (a `Specialist`, a `Team`, a `Graph`, your own type implementing `Agent`), or an \
            async function or closure taking one input and returning `Result<Output, E>`"
)]
pub trait IntoNode<M>: Send + Sync + 'static {
    /// The agent it becomes.
    type Agent: Agent;
    /// Makes the agent.
    fn into_agent(self) -> Self::Agent;
}

/// Marks nodes that are already agents.
#[derive(Debug)]
pub enum IsAgent {}

/// Marks async functions and closures.
#[derive(Debug)]
pub enum IsFn {}

impl<A: Agent + 'static> IntoNode<IsAgent> for A {
    type Agent = A;
    fn into_agent(self) -> A {
        self
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
    type Agent = FnAgent<F, I, O, E>;
    fn into_agent(self) -> Self::Agent {
        from_fn(self)
    }
}
