//! S6: candidates run in the shadow of the serving agent, promoted per cluster when they agree, rolled back
//! when they stop agreeing.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::select::text_similarity;
use crate::agent::Agent;
use crate::router::Router;
use crate::run::{PromotionEvent, RunContext, RunEvent, ShadowEvent};
use crate::Result;

type SharedAgent<O> = Arc<dyn Agent<Input = String, Output = O>>;
type Agreement<O> = Arc<dyn Fn(&O, &O) -> bool + Send + Sync>;

/// When a candidate takes a cluster over, and when it gives it back.
///
/// ```
/// use slm_agents::distill::PromotionRule;
///
/// // Promote after 20 comparisons at 90% agreement; roll back below 80% over the last 20.
/// let rule = PromotionRule::new(20, 0.9).rollback_below(0.8);
/// assert_eq!(rule.window, 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PromotionRule {
    /// Comparisons needed before a promotion (n).
    pub min_calls: usize,
    /// The agreement needed over them (p, from 0 to 1).
    pub agreement: f64,
    /// A promoted candidate is rolled back when agreement over the window falls below this (default `agreement`).
    pub rollback_below: f64,
    /// How many recent comparisons agreement is measured over (default `min_calls`).
    pub window: usize,
}

impl PromotionRule {
    /// Promote after `min_calls` comparisons with at least `agreement` of them agreeing.
    pub fn new(min_calls: usize, agreement: f64) -> Self {
        let min_calls = min_calls.max(1);
        Self { min_calls, agreement, rollback_below: agreement, window: min_calls }
    }

    /// Roll back when agreement over the window falls below `agreement`.
    pub fn rollback_below(mut self, agreement: f64) -> Self {
        self.rollback_below = agreement;
        self
    }

    /// Measure agreement over the last `calls` comparisons (at least `min_calls`).
    pub fn window(mut self, calls: usize) -> Self {
        self.window = calls.max(self.min_calls);
        self
    }
}

/// Where one cluster stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// The cluster.
    pub cluster: usize,
    /// Its candidate.
    pub candidate: String,
    /// Whether the candidate serves it.
    pub promoted: bool,
    /// Recent comparisons (up to the rule's window).
    pub compared: usize,
    /// Agreement over them.
    pub agreement: f64,
}

#[derive(Default)]
struct State {
    promoted: bool,
    recent: VecDeque<bool>,
}

impl State {
    /// Counts one comparison and applies the rule. Returns the agreement and the number of comparisons it is
    /// over (as they were before a decision cleared them), and the decision with its reason: `true` promoted,
    /// `false` rolled back.
    fn count(&mut self, agreed: bool, rule: &PromotionRule) -> (f64, usize, Option<(bool, String)>) {
        self.recent.push_back(agreed);
        while self.recent.len() > rule.window {
            self.recent.pop_front();
        }
        let (agreement, compared) = (self.agreement(), self.recent.len());
        let decision = if !self.promoted && compared >= rule.min_calls && agreement >= rule.agreement {
            Some((
                true,
                format!(
                    "agreement {:.0}% over the last {compared} calls reached {:.0}%",
                    agreement * 100.0,
                    rule.agreement * 100.0
                ),
            ))
        } else if self.promoted && compared >= rule.min_calls && agreement < rule.rollback_below {
            Some((
                false,
                format!(
                    "agreement {:.0}% over the last {compared} calls fell below {:.0}%",
                    agreement * 100.0,
                    rule.rollback_below * 100.0
                ),
            ))
        } else {
            None
        };
        if let Some((promoted, _)) = &decision {
            self.promoted = *promoted;
            self.recent.clear();
        }
        (agreement, compared, decision)
    }

    fn agreement(&self) -> f64 {
        if self.recent.is_empty() {
            0.0
        } else {
            self.recent.iter().filter(|a| **a).count() as f64 / self.recent.len() as f64
        }
    }
}

struct Job<O> {
    request: String,
    served: O,
    served_by_candidate: bool,
    cluster: usize,
    ctx: RunContext,
    /// The promoted candidate failed on this request (the current agent answered): a disagreement, with no
    /// shadow to run.
    candidate_failed: Option<String>,
}

struct Inner<O> {
    name: String,
    current: SharedAgent<O>,
    candidates: BTreeMap<usize, SharedAgent<O>>,
    router: Arc<dyn Router<Option<usize>>>,
    rule: PromotionRule,
    agree: Agreement<O>,
    state: Mutex<BTreeMap<usize, State>>,
    pending: std::sync::atomic::AtomicUsize,
    max_pending: usize,
    jobs: mpsc::UnboundedSender<Job<O>>,
    queue: futures::lock::Mutex<mpsc::UnboundedReceiver<Job<O>>>,
}

/// Step S6 of the conversion loop: serves requests with the current agent (the large model) and runs each
/// cluster's candidate (a small specialist) in its shadow; once a candidate agrees with it on at least
/// [`PromotionRule::agreement`] of [`PromotionRule::min_calls`] requests of its cluster, the candidate serves
/// that cluster and the current agent runs in *its* shadow, so that a drop in agreement rolls it back.
///
/// - Requests are routed to clusters by a router (usually [`Clustering::router`](super::Clustering::router):
///   the centroids of S3). Requests of clusters without a candidate, or that no cluster is near, go to the
///   current agent.
/// - The shadow never delays an answer: `run` returns the served answer and queues the comparison. Spawn
///   [`worker`](Self::worker) on your runtime, or call [`settle`](Self::settle) when convenient.
/// - Every comparison is recorded in the served run's ledger as a [`ShadowEvent`], every promotion and
///   rollback as a [`PromotionEvent`] with its reason; the shadow's own model calls are recorded too.
/// - A promoted candidate that fails is answered for by the current agent, and counts as a disagreement. The
///   current agent failing in a promoted candidate's shadow is recorded, not counted: it says nothing about
///   the candidate.
/// - At most [`max_pending`](ShadowedBuilder::max_pending) comparisons wait; beyond, new ones are dropped.
///
/// Agreement is [`agree_json`] on the answers by default ([`agreement`](ShadowedBuilder::agreement) to
/// change it).
pub struct Shadowed<O> {
    inner: Arc<Inner<O>>,
}

impl<O> Clone for Shadowed<O> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<O> fmt::Debug for Shadowed<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shadowed")
            .field("name", &self.inner.name)
            .field("clusters", &self.inner.candidates.keys().collect::<Vec<_>>())
            .field("rule", &self.inner.rule)
            .finish()
    }
}

/// Builds a [`Shadowed`]; from [`Shadowed::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct ShadowedBuilder<O> {
    name: String,
    current: SharedAgent<O>,
    candidates: BTreeMap<usize, SharedAgent<O>>,
    router: Arc<dyn Router<Option<usize>>>,
    rule: PromotionRule,
    agree: Agreement<O>,
    promoted: Vec<usize>,
    max_pending: usize,
}

impl<O> fmt::Debug for ShadowedBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowedBuilder").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<O: Serialize + Clone + Send + Sync + 'static> Shadowed<O> {
    /// Starts a wrapper around `current`, routing with `router`; by default, a candidate is promoted after
    /// 20 comparisons at 90% agreement.
    pub fn builder(
        current: impl Agent<Input = String, Output = O> + 'static,
        router: impl Router<Option<usize>> + 'static,
    ) -> ShadowedBuilder<O> {
        ShadowedBuilder {
            name: format!("shadowed({})", current.name()),
            current: Arc::new(current),
            candidates: BTreeMap::new(),
            router: Arc::new(router),
            rule: PromotionRule::new(20, 0.9),
            agree: Arc::new(|a: &O, b: &O| match (serde_json::to_value(a), serde_json::to_value(b)) {
                (Ok(a), Ok(b)) => agree_json(&a, &b),
                _ => false,
            }),
            promoted: Vec::new(),
            max_pending: 1024,
        }
    }

    /// Where each cluster with a candidate stands.
    pub fn status(&self) -> Vec<ClusterStatus> {
        let state = self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner
            .candidates
            .iter()
            .map(|(&cluster, candidate)| {
                let s = state.get(&cluster);
                ClusterStatus {
                    cluster,
                    candidate: candidate.name(),
                    promoted: s.is_some_and(|s| s.promoted),
                    compared: s.map_or(0, |s| s.recent.len()),
                    agreement: s.map_or(0.0, State::agreement),
                }
            })
            .collect()
    }

    /// Whether `cluster`'s candidate serves it.
    pub fn is_promoted(&self, cluster: usize) -> bool {
        self.inner.candidates.contains_key(&cluster) && self.inner.promoted(cluster)
    }

    /// Runs the shadow comparisons queued so far, one after another, and returns how many ran. Returns 0 at
    /// once while a [`worker`](Self::worker) is running (it runs them).
    pub async fn settle(&self) -> usize {
        let Some(mut queue) = self.inner.queue.try_lock() else { return 0 };
        let mut ran = 0;
        while let Ok(job) = queue.try_recv() {
            self.inner.pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.compare(job).await;
            ran += 1;
        }
        ran
    }

    /// A future that runs shadow comparisons as they are queued, for as long as it is polled: spawn it on
    /// your runtime (`tokio::spawn(shadowed.worker())`) and abort it when done.
    pub fn worker(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let mut queue = inner.queue.lock().await;
            while let Some(job) = queue.next().await {
                inner.pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                inner.compare(job).await;
            }
        }
    }
}

impl<O: Serialize + Clone + Send + Sync + 'static> ShadowedBuilder<O> {
    /// The candidate for `cluster`.
    pub fn candidate(mut self, cluster: usize, candidate: impl Agent<Input = String, Output = O> + 'static) -> Self {
        self.candidates.insert(cluster, Arc::new(candidate));
        self
    }

    /// The promotion rule (default `PromotionRule::new(20, 0.9)`).
    pub fn rule(mut self, rule: PromotionRule) -> Self {
        self.rule = rule;
        self
    }

    /// How two answers are compared (default [`agree_json`] on their JSON).
    pub fn agreement(mut self, agree: impl Fn(&O, &O) -> bool + Send + Sync + 'static) -> Self {
        self.agree = Arc::new(agree);
        self
    }

    /// Starts with `cluster` promoted (a decision restored from an earlier process).
    pub fn promoted(mut self, cluster: usize) -> Self {
        self.promoted.push(cluster);
        self
    }

    /// At most this many comparisons wait to run (default 1,024); beyond, new ones are dropped (with a debug
    /// log) rather than let memory grow while nothing drains the queue.
    pub fn max_pending(mut self, comparisons: usize) -> Self {
        self.max_pending = comparisons;
        self
    }

    /// The name it runs under (default `shadowed(<current>)`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Builds it.
    pub fn build(self) -> Shadowed<O> {
        let (jobs, queue) = mpsc::unbounded();
        let state = self.promoted.iter().map(|&c| (c, State { promoted: true, recent: VecDeque::new() })).collect();
        Shadowed {
            inner: Arc::new(Inner {
                name: self.name,
                current: self.current,
                candidates: self.candidates,
                router: self.router,
                rule: self.rule,
                agree: self.agree,
                state: Mutex::new(state),
                pending: std::sync::atomic::AtomicUsize::new(0),
                max_pending: self.max_pending,
                jobs,
                queue: futures::lock::Mutex::new(queue),
            }),
        }
    }
}

impl<O: Serialize + Clone + Send + Sync + 'static> Inner<O> {
    fn promoted(&self, cluster: usize) -> bool {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&cluster).is_some_and(|s| s.promoted)
    }

    fn queue(&self, job: Job<O>) {
        use std::sync::atomic::Ordering;
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(cluster = job.cluster, "too many comparisons waiting; this one is dropped");
            return;
        }
        if self.jobs.unbounded_send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn compare(&self, job: Job<O>) {
        let Some(candidate) = self.candidates.get(&job.cluster) else { return };
        let (served_by, shadow) =
            if job.served_by_candidate { (candidate, &self.current) } else { (&self.current, candidate) };
        // `Some(agreed)` counts; `None`: the current agent failed in the candidate's shadow, which says nothing
        // about the candidate (recorded, not counted).
        let (counted, error) = match job.candidate_failed {
            Some(error) => (Some(false), Some(error)),
            None => match shadow.run(job.request.clone(), &job.ctx).await {
                Ok(answer) => (Some((self.agree)(&job.served, &answer)), None),
                Err(e) if job.served_by_candidate => {
                    tracing::debug!(cluster = job.cluster, error = %message(&e), "the shadow failed; not counted");
                    (None, Some(message(&e)))
                }
                Err(e) => (Some(false), Some(message(&e))),
            },
        };
        let (agreement, compared, decision) = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let s = state.entry(job.cluster).or_default();
            match counted {
                Some(agreed) => s.count(agreed, &self.rule),
                None => (s.agreement(), s.recent.len(), None),
            }
        };
        job.ctx.record(RunEvent::Shadow(ShadowEvent {
            ids: job.ctx.ids(),
            cluster: job.cluster,
            served_by: served_by.name(),
            shadow: shadow.name(),
            agreed: counted.unwrap_or(false),
            agreement,
            compared,
            error,
        }));
        if let Some((promoted, reason)) = decision {
            tracing::info!(cluster = job.cluster, candidate = %candidate.name(), promoted, %reason, "routing changed");
            job.ctx.record(RunEvent::Promotion(PromotionEvent {
                ids: job.ctx.ids(),
                cluster: job.cluster,
                candidate: candidate.name(),
                promoted,
                reason,
            }));
        }
    }
}

#[async_trait::async_trait]
impl<O: Serialize + Clone + Send + Sync + 'static> Agent for Shadowed<O> {
    type Input = String;
    type Output = O;

    fn name(&self) -> String {
        self.inner.name.clone()
    }

    async fn run(&self, input: String, ctx: &RunContext) -> Result<O> {
        let inner = &self.inner;
        let cluster = match inner.router.route(&input, ctx).await {
            Ok(d) => d.route.filter(|c| inner.candidates.contains_key(c)),
            Err(e) => {
                tracing::warn!(error = %message(&e), "routing failed; the current agent serves");
                None
            }
        };
        let Some(cluster) = cluster else { return inner.current.run(input, ctx).await };
        let by_candidate = inner.promoted(cluster);
        // Who served, and, when a promoted candidate failed, why the current agent served instead.
        let (served, served_by_candidate, candidate_failed) = if by_candidate {
            match inner.candidates[&cluster].run(input.clone(), ctx).await {
                Ok(answer) => (answer, true, None),
                Err(e) => {
                    tracing::warn!(cluster, error = %message(&e), "the promoted candidate failed; the current agent serves");
                    (inner.current.run(input.clone(), ctx).await?, false, Some(message(&e)))
                }
            }
        } else {
            (inner.current.run(input.clone(), ctx).await?, false, None)
        };
        inner.queue(Job {
            request: input,
            served: served.clone(),
            served_by_candidate,
            cluster,
            ctx: ctx.clone(),
            candidate_failed,
        });
        Ok(served)
    }
}

/// Whether two answers agree, as JSON: the same shape and values, numbers equal to within 1e-6 of their
/// size, strings equal once lower-cased and trimmed, or overlapping in at least 80% of their words (F1).
pub fn agree_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().eq_ignore_ascii_case(y.trim()) || text_similarity(x, y) >= 0.8,
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| agree_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| agree_json(v, w)))
        }
        _ => a == b,
    }
}

/// An error with its causes, in one line.
fn message(error: &crate::Error) -> String {
    crate::error::with_causes(error)
}

#[cfg(test)]
mod tests {
    use super::agree_json;
    use serde_json::json;

    #[test]
    fn answers_agree_as_json_with_some_slack() {
        assert!(agree_json(&json!({"city": "Paris", "n": 2}), &json!({"n": 2.0000000001, "city": "paris "})));
        assert!(agree_json(&json!("It is 18 degrees in Paris today"), &json!("It is 18 degrees in Paris")));
        assert!(!agree_json(&json!({"city": "Paris"}), &json!({"city": "Rome"})));
        assert!(!agree_json(&json!({"city": "Paris"}), &json!({"city": "Paris", "extra": 1})));
        assert!(!agree_json(&json!([1, 2]), &json!([2, 1])));
    }
}
