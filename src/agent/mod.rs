//! Agents: anything with a typed async `run`. Specialists, teams, graphs and async closures are agents, and
//! every agent can be a graph node.

mod adapt;
mod team;

pub use adapt::{from_fn, BoxAgent, FnAgent, MapOutput};
pub use team::{Plan, PlanStep, StepResult, Team, TeamBuilder, TeamResults};

use crate::run::{RunContext, RunStream};
use crate::Result;

/// Something that does a job: typed input in, typed output out, reporting to the run's context.
///
/// This is the crate's one trait for a typed async step. The trait is object-safe: hosts can hold
/// `Box<dyn Agent<Input = String, Output = Plan>>` (or a [`BoxAgent`]). Every agent can be added to a
/// [`Graph`](crate::graph::Graph) as a node, and an async closure becomes an agent with [`from_fn`] (the graph
/// does that by itself).
///
/// Implement it with [`async_trait`](crate::async_trait) (re-exported by the crate):
///
/// ```
/// use slm_agents::agent::Agent;
/// use slm_agents::run::RunContext;
///
/// struct Echo;
///
/// #[slm_agents::async_trait]
/// impl Agent for Echo {
///     type Input = String;
///     type Output = String;
///     fn name(&self) -> String {
///         "echo".into()
///     }
///     async fn run(&self, input: String, _ctx: &RunContext) -> slm_agents::Result<String> {
///         Ok(input)
///     }
/// }
///
/// let agent: Box<dyn Agent<Input = String, Output = String>> = Box::new(Echo);
/// assert_eq!(futures::executor::block_on(agent.run("hi".into(), &RunContext::new())).unwrap(), "hi");
/// ```
#[async_trait::async_trait]
pub trait Agent: Send + Sync {
    /// What the agent is given.
    type Input: Send + 'static;
    /// What it answers.
    type Output: Send + 'static;

    /// Its name, for reports, errors and diagrams.
    fn name(&self) -> String;

    /// Does its job. Model and tool calls are reported to `ctx`.
    async fn run(&self, input: Self::Input, ctx: &RunContext) -> Result<Self::Output>;

    /// Does its job as a stream of what happens: nodes and calls as they start and finish, the text of the
    /// specialist that is writing, then the output or the error (see [`RunStream`]). Polling the stream runs
    /// the agent; dropping it cancels the run. `ctx`'s recorders still receive every event.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use slm_agents::prelude::*;
    /// use slm_agents::run::RunUpdate;
    ///
    /// # async fn demo(agent: &dyn Agent<Input = String, Output = String>) {
    /// let mut updates = agent.run_stream("What's the weather in Paris?".into(), &RunContext::new());
    /// while let Some(update) = updates.next().await {
    ///     match update {
    ///         RunUpdate::ToolCallStarted { tool, arguments, .. } => eprintln!("calling {tool} {arguments}"),
    ///         RunUpdate::Token { text, .. } => eprint!("{text}"),
    ///         RunUpdate::Finished(answer) => println!("{answer}"),
    ///         RunUpdate::Failed(e) => eprintln!("failed: {e}"),
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    fn run_stream<'a>(&'a self, input: Self::Input, ctx: &RunContext) -> RunStream<'a, Self::Output> {
        RunStream::new(ctx, move |ctx| async move { self.run(input, &ctx).await })
    }
}

/// An agent behind an `Arc` (one specialist in several graphs or teams) is an agent.
#[async_trait::async_trait]
impl<A: Agent + ?Sized> Agent for std::sync::Arc<A> {
    type Input = A::Input;
    type Output = A::Output;
    fn name(&self) -> String {
        (**self).name()
    }
    async fn run(&self, input: A::Input, ctx: &RunContext) -> Result<A::Output> {
        (**self).run(input, ctx).await
    }
}

/// A boxed agent is an agent.
#[async_trait::async_trait]
impl<A: Agent + ?Sized> Agent for Box<A> {
    type Input = A::Input;
    type Output = A::Output;
    fn name(&self) -> String {
        (**self).name()
    }
    async fn run(&self, input: A::Input, ctx: &RunContext) -> Result<A::Output> {
        (**self).run(input, ctx).await
    }
}
