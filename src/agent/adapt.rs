//! Agents made from other things: async closures, other agents with their output converted, and the erased
//! form hosts and teams store.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use super::Agent;
use crate::run::RunContext;
use crate::{Error, Result};

/// An agent behind a pointer, its concrete type erased: what teams keep their members as, and what a host
/// keeps in a list of agents of one input and output.
pub type BoxAgent<I, O> = Arc<dyn Agent<Input = I, Output = O>>;

/// Makes an agent of an async function or closure `Fn(I) -> impl Future<Output = Result<O, E>>`. An error
/// of the crate's own is passed on as it is; any other becomes [`Error::Node`] (named by the graph node or
/// team step it ran in).
///
/// ```
/// use slm_agents::agent::{from_fn, Agent};
/// use slm_agents::run::RunContext;
///
/// let shout = from_fn(|s: String| async move { Ok::<_, std::io::Error>(s.to_uppercase()) }).named("shout");
/// let out = futures::executor::block_on(shout.run("hi".into(), &RunContext::new())).unwrap();
/// assert_eq!(out, "HI");
/// ```
pub fn from_fn<F, Fut, I, O, E>(f: F) -> FnAgent<F, I, O, E>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<O, E>> + Send + 'static,
{
    FnAgent { f, name: "fn".into(), _types: PhantomData }
}

/// An async function or closure as an agent; from [`from_fn`].
pub struct FnAgent<F, I, O, E> {
    f: F,
    name: String,
    _types: PhantomData<fn(I) -> std::result::Result<O, E>>,
}

impl<F, I, O, E> FnAgent<F, I, O, E> {
    /// Names the agent (default `fn`).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl<F, I, O, E> std::fmt::Debug for FnAgent<F, I, O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnAgent").field("name", &self.name).field("f", &std::any::type_name::<F>()).finish()
    }
}

#[async_trait::async_trait]
impl<F, Fut, I, O, E> Agent for FnAgent<F, I, O, E>
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<O, E>> + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    type Input = I;
    type Output = O;

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn run(&self, input: I, _ctx: &RunContext) -> Result<O> {
        (self.f)(input).await.map_err(|e| {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            match e.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::Node { node: String::new(), source: other },
            }
        })
    }
}

/// An agent whose output is converted by a function; from [`MapOutput::new`].
pub struct MapOutput<A, F> {
    agent: A,
    map: F,
}

impl<A, F> MapOutput<A, F> {
    /// `agent`, with each output passed through `map`.
    pub fn new(agent: A, map: F) -> Self {
        Self { agent, map }
    }
}

impl<A: Agent, F> std::fmt::Debug for MapOutput<A, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapOutput").field("agent", &self.agent.name()).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<A, F, T> Agent for MapOutput<A, F>
where
    A: Agent,
    F: Fn(A::Output) -> Result<T> + Send + Sync,
    T: Send + 'static,
{
    type Input = A::Input;
    type Output = T;

    fn name(&self) -> String {
        self.agent.name()
    }

    async fn run(&self, input: A::Input, ctx: &RunContext) -> Result<T> {
        (self.map)(self.agent.run(input, ctx).await?)
    }
}
