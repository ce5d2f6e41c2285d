//! Agents: anything with a typed `run`. Specialists, graphs and teams are agents.

mod team;

pub use team::{Plan, PlanStep, StepResult, Team, TeamBuilder, TeamResults};

use crate::run::RunContext;
use crate::Result;

/// Something that does a job: typed input in, typed output out, reporting to the run's context.
///
/// The trait is object-safe: hosts can hold `Box<dyn Agent<Input = String, Output = Plan>>`. Every agent is
/// also a graph [`Node`](crate::graph::Node).
///
/// ```
/// use slm_agents::agent::Agent;
/// use slm_agents::run::RunContext;
///
/// struct Echo;
///
/// #[async_trait::async_trait]
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
}
