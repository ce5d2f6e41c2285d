//! Routers: given a task, pick a route (a specialist, a branch of a graph, escalation), with a confidence and
//! a reason.
//!
//! [`Router`] is object-safe and generic over the host's route type (typically an enum of specialists).
//! [`RuleRouter`] matches closures, keywords and regular expressions; [`EmbeddingRouter`] compares the task's
//! embedding with example utterances per route (nearest centroid by cosine, fully local) and falls back below a
//! threshold; [`ModelRouter`] lets a small model pick a route name under a grammar (only valid names can come
//! out), with the probability of its choice as confidence. Routers plug into a graph with [`GraphBuilder::route`](crate::graph::GraphBuilder::route).
//!
#![doc = include_str!("../../docs/routers.md")]

mod cascade;
mod embedding;
mod model_choice;
mod rules;

pub use cascade::CascadeRouter;
#[cfg(feature = "distill")]
pub(crate) use embedding::cosine;
pub use embedding::{EmbeddingRouter, EmbeddingRouterBuilder};
pub use model_choice::{ModelRouter, ModelRouterBuilder};
pub use rules::RuleRouter;

use serde::{Deserialize, Serialize};

use crate::run::RunContext;
use crate::Result;

/// A router's choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision<R> {
    /// The chosen route.
    pub route: R,
    /// How sure the router is, from 0 to 1 (its meaning depends on the router; see each one).
    pub confidence: f32,
    /// Why, in words (for logs and the ledger).
    pub reason: String,
}

/// Picks a route for a task.
///
/// ```
/// use slm_agents::router::{Decision, Router, RuleRouter};
/// use slm_agents::run::RunContext;
///
/// #[derive(Debug, Clone, PartialEq)]
/// enum Desk { Flights, Hotels, Other }
///
/// let router = RuleRouter::new(Desk::Other)
///     .keywords(["flight", "fly", "plane"], Desk::Flights)
///     .keywords(["hotel", "room", "stay"], Desk::Hotels);
/// let d: Decision<Desk> = futures::executor::block_on(router.route("I need a room in Rome", &RunContext::new())).unwrap();
/// assert_eq!(d.route, Desk::Hotels);
/// ```
#[async_trait::async_trait]
pub trait Router<R>: Send + Sync {
    /// Decides where `task` goes.
    async fn route(&self, task: &str, ctx: &RunContext) -> Result<Decision<R>>;
}

#[async_trait::async_trait]
impl<R, T: Router<R> + ?Sized> Router<R> for std::sync::Arc<T> {
    async fn route(&self, task: &str, ctx: &RunContext) -> Result<Decision<R>> {
        (**self).route(task, ctx).await
    }
}
