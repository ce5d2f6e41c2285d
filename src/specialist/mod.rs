//! Specialists: a small model with one narrow job, its instructions, its tools and a typed answer.
//!
//! [`Specialist`] is the trait routers, managers and graphs work with: a [`SpecialistCard`] (name,
//! description, example tasks) on top of [`Agent`]'s async `run` from a typed input to a typed output.
//! [`ModelSpecialist`] is the model-backed implementation, built with [`ModelSpecialist::builder`]: each turn of its model is decoded
//! under one grammar that allows exactly a call of one of *its* tools (name from that closed set, arguments from
//! that tool's schema) or its final answer (the output type), so a small model cannot produce a malformed call.
//!
#![doc = include_str!("../../docs/specialists.md")]

mod format;
mod model;
mod relevance;

pub use format::ToolFormat;
pub use model::{
    Decided, Decision, ModelSpecialist, ModelSpecialistBuilder, DEFAULT_MAX_TOOL_RESULT_BYTES, DEFAULT_NARROW_MARGIN,
    DEFAULT_RELEVANCE_THRESHOLD,
};

use serde::{Deserialize, Serialize};

use crate::agent::Agent;

/// What routers and managers read about a specialist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialistCard {
    /// A short unique name, e.g. `"flights"`.
    pub name: String,
    /// What the specialist does, in one or two sentences.
    pub description: String,
    /// A few tasks it handles well, in the words a user would use.
    pub examples: Vec<String>,
}

/// A specialist: an [`Agent`] with a card that routers and managers read.
///
/// The trait is object-safe: hosts can hold `Box<dyn Specialist<Input = String, Output = Plan>>`. Its `run`
/// comes from [`Agent`].
///
/// ```
/// use slm_agents::agent::Agent;
/// use slm_agents::run::RunContext;
/// use slm_agents::specialist::{Specialist, SpecialistCard};
///
/// /// A specialist that needs no model: it upper-cases its input.
/// struct Shouter(SpecialistCard);
///
/// #[async_trait::async_trait]
/// impl Agent for Shouter {
///     type Input = String;
///     type Output = String;
///     fn name(&self) -> String {
///         self.0.name.clone()
///     }
///     async fn run(&self, input: String, _ctx: &RunContext) -> slm_agents::Result<String> {
///         Ok(input.to_uppercase())
///     }
/// }
///
/// impl Specialist for Shouter {
///     fn card(&self) -> &SpecialistCard {
///         &self.0
///     }
/// }
///
/// let card = SpecialistCard { name: "shouter".into(), description: "Shouts".into(), examples: vec![] };
/// let s: Box<dyn Specialist<Input = String, Output = String>> = Box::new(Shouter(card));
/// let out = futures::executor::block_on(s.run("hi".into(), &RunContext::new())).unwrap();
/// assert_eq!(out, "HI");
/// ```
pub trait Specialist: Agent {
    /// Its name, description and example tasks.
    fn card(&self) -> &SpecialistCard;
}
