//! Routing by meaning: example utterances per route, embedded locally, nearest centroid by cosine.

use std::sync::Arc;

use super::{Decision, Router};
use crate::model::LanguageModel;
use crate::run::RunContext;
use crate::{Error, Result};

/// Routes to the route whose example utterances are closest in meaning to the task.
///
/// Each route's examples are embedded once (when the router is built) and averaged into a centroid; a task is
/// embedded and compared with every centroid by cosine similarity. If the best similarity is below the
/// threshold, the task goes to the fallback route. Confidence is the best similarity (clamped to 0..=1).
///
/// ```no_run
/// use slm_agents::model::LlamaModel;
/// use slm_agents::router::{EmbeddingRouter, Router};
/// use slm_agents::run::RunContext;
///
/// # async fn demo() -> slm_agents::Result<()> {
/// let slm = LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").load()?;
/// let router = EmbeddingRouter::builder(slm, "other")
///     .route("flights", ["book a flight to Rome", "is there a plane to Paris on Monday"])
///     .route("hotels", ["find me a hotel in Lisbon", "a room for two nights"])
///     .threshold(0.5)
///     .build()
///     .await?;
/// let decision = router.route("I want to fly to Berlin", &RunContext::new()).await?;
/// # Ok(()) }
/// ```
pub struct EmbeddingRouter<R> {
    model: Arc<dyn LanguageModel>,
    centroids: Vec<(R, Vec<f32>)>,
    threshold: f32,
    fallback: R,
}

impl<R: std::fmt::Debug> std::fmt::Debug for EmbeddingRouter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingRouter")
            .field("routes", &self.centroids.iter().map(|(r, _)| r).collect::<Vec<_>>())
            .field("threshold", &self.threshold)
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// Builds an [`EmbeddingRouter`]; from [`EmbeddingRouter::builder`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct EmbeddingRouterBuilder<R> {
    model: Arc<dyn LanguageModel>,
    routes: Vec<(R, Vec<String>)>,
    threshold: f32,
    fallback: R,
}

impl<R: std::fmt::Debug> std::fmt::Debug for EmbeddingRouterBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingRouterBuilder").field("routes", &self.routes.len()).finish_non_exhaustive()
    }
}

impl<R: Clone + Send + Sync + 'static> EmbeddingRouter<R> {
    /// Starts a router that embeds with `model` and sends unclear tasks to `fallback`.
    pub fn builder(model: impl LanguageModel + 'static, fallback: R) -> EmbeddingRouterBuilder<R> {
        EmbeddingRouterBuilder { model: Arc::new(model), routes: Vec::new(), threshold: 0.0, fallback }
    }

    /// The similarity of `task` to each route's centroid, best first.
    ///
    /// # Errors
    /// Whatever the model's `embed` returns.
    pub async fn similarities(&self, task: &str, ctx: &RunContext) -> Result<Vec<(R, f32)>> {
        let v = ctx.embed(&*self.model, &[task.to_owned()]).await?.pop().unwrap_or_default();
        let mut scored: Vec<(R, f32)> = self.centroids.iter().map(|(r, c)| (r.clone(), cosine(&v, c))).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(scored)
    }
}

impl<R: Clone + Send + Sync + 'static> EmbeddingRouterBuilder<R> {
    /// Adds a route with example utterances, in the words users would use.
    pub fn route<S: Into<String>>(mut self, route: R, examples: impl IntoIterator<Item = S>) -> Self {
        self.routes.push((route, examples.into_iter().map(Into::into).collect()));
        self
    }

    /// Below this cosine similarity, the task goes to the fallback route (default 0: never).
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }

    /// Embeds the examples and builds the router (outside any run: only the model's own privacy policy
    /// applies; see [`build_in`](Self::build_in)).
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] without routes or with a route without examples; any error of the model.
    pub async fn build(self) -> Result<EmbeddingRouter<R>> {
        self.build_in(&RunContext::new()).await
    }

    /// Embeds the examples within a run (under its privacy policy) and builds the router.
    ///
    /// # Errors
    /// As [`build`](Self::build), and [`Error::PrivacyViolation`] when the policy forbids sending the
    /// examples to a remote model.
    pub async fn build_in(self, ctx: &RunContext) -> Result<EmbeddingRouter<R>> {
        if self.routes.is_empty() {
            return Err(Error::InvalidSetting { setting: "routes", reason: "an embedding router needs routes".into() });
        }
        let mut centroids = Vec::with_capacity(self.routes.len());
        for (route, examples) in self.routes {
            if examples.is_empty() {
                return Err(Error::InvalidSetting { setting: "routes", reason: "every route needs examples".into() });
            }
            let vectors = ctx.embed(&*self.model, &examples).await?;
            let dim = vectors.first().map_or(0, Vec::len);
            let mut centroid = vec![0f32; dim];
            for v in &vectors {
                for (c, x) in centroid.iter_mut().zip(v) {
                    *c += x;
                }
            }
            centroids.push((route, centroid));
        }
        Ok(EmbeddingRouter { model: self.model, centroids, threshold: self.threshold, fallback: self.fallback })
    }
}

/// The cosine similarity of two vectors; 0 when either is zero.
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[async_trait::async_trait]
impl<R: Clone + std::fmt::Debug + Send + Sync + 'static> Router<R> for EmbeddingRouter<R> {
    async fn route(&self, task: &str, ctx: &RunContext) -> Result<Decision<R>> {
        let scored = self.similarities(task, ctx).await?;
        let Some((best, similarity)) = scored.first().cloned() else {
            return Ok(Decision { route: self.fallback.clone(), confidence: 0.0, reason: "no routes".into() });
        };
        if similarity < self.threshold {
            return Ok(Decision {
                route: self.fallback.clone(),
                confidence: similarity.clamp(0.0, 1.0),
                reason: format!(
                    "closest route {best:?} at similarity {similarity:.2}, below the threshold {:.2}",
                    self.threshold
                ),
            });
        }
        let runner_up = scored.get(1).map_or(0.0, |s| s.1);
        Ok(Decision {
            route: best.clone(),
            confidence: similarity.clamp(0.0, 1.0),
            reason: format!("closest to {best:?} examples (similarity {similarity:.2}, next {runner_up:.2})"),
        })
    }
}
