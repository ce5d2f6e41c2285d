//! Escalation: trust the small model when it is sure, otherwise go to the large one.

use std::sync::Arc;

use super::{Decision, Router};
use crate::run::RunContext;
use crate::Result;

/// Runs a first router (typically a [`ModelRouter`](super::ModelRouter) on a small model); when its confidence
/// is below the threshold, or its output still fails validation after bounded retries, the decision is the
/// escalation route instead, and its reason says why.
///
/// ```
/// use slm_agents::router::{CascadeRouter, Router, RuleRouter};
/// use slm_agents::run::RunContext;
///
/// // A rule router is sure (1.0) when a rule matched and unsure (0.0) otherwise.
/// let first = RuleRouter::new("unsure").keywords(["flight"], "flights");
/// let cascade = CascadeRouter::new(first, 0.5, "large-model");
/// let d = futures::executor::block_on(cascade.route("explain baroque architecture", &RunContext::new())).unwrap();
/// assert_eq!(d.route, "large-model");
/// assert!(d.reason.contains("confidence"));
/// ```
pub struct CascadeRouter<R> {
    first: Arc<dyn Router<R>>,
    threshold: f32,
    escalate: R,
    retries: usize,
}

impl<R: std::fmt::Debug> std::fmt::Debug for CascadeRouter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CascadeRouter")
            .field("threshold", &self.threshold)
            .field("escalate", &self.escalate)
            .finish_non_exhaustive()
    }
}

impl<R: Clone + Send + Sync + 'static> CascadeRouter<R> {
    /// Escalates to `escalate` when `first`'s confidence is below `threshold`.
    pub fn new(first: impl Router<R> + 'static, threshold: f32, escalate: R) -> Self {
        Self { first: Arc::new(first), threshold, escalate, retries: 1 }
    }

    /// How many more times the first router is asked when its output fails validation (default 1).
    #[must_use]
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }
}

#[async_trait::async_trait]
impl<R: Clone + std::fmt::Debug + Send + Sync + 'static> Router<R> for CascadeRouter<R> {
    async fn route(&self, task: &str, ctx: &RunContext) -> Result<Decision<R>> {
        let mut last_error = None;
        for _ in 0..=self.retries {
            match self.first.route(task, ctx).await {
                Ok(d) if d.confidence >= self.threshold => return Ok(d),
                Ok(d) => {
                    return Ok(Decision {
                        route: self.escalate.clone(),
                        confidence: 1.0 - d.confidence,
                        reason: format!(
                            "escalated: the first router chose {:?} with confidence {:.2}, below {:.2} ({})",
                            d.route, d.confidence, self.threshold, d.reason
                        ),
                    })
                }
                Err(e) if e.is_invalid_output() => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Ok(Decision {
            route: self.escalate.clone(),
            confidence: 1.0,
            reason: format!(
                "escalated: the first router's output failed validation {} times ({})",
                self.retries + 1,
                last_error.map(|e| e.to_string()).unwrap_or_default()
            ),
        })
    }
}
