//! Running a graph: ready nodes run concurrently, skips propagate, the first error ends the run.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::{Kind, NodeSpec, Routed, Value};
use crate::run::{CallIds, NodeEvent, Outcome, RunContext, RunEvent, RunUpdate};
use crate::{Error, Result};

/// How a node's run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NodeOutcome {
    /// It produced its value.
    Succeeded,
    /// A branch did not choose its route (or it depends only on skipped nodes).
    Skipped,
    /// It failed; the error's message.
    Failed(String),
    /// It was running or waiting when the run ended because another node failed.
    Cancelled,
    /// The run ended before it was reached.
    NotRun,
}

/// One node in a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name.
    pub name: String,
    /// When it started, from the start of the run.
    pub started: Option<Duration>,
    /// When it ended, from the start of the run.
    pub finished: Option<Duration>,
    /// How it ended.
    pub outcome: NodeOutcome,
    /// Tries made (more than 1 when retried).
    pub attempts: u32,
}

/// What happened to every node of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The nodes, in the order they were added (the input first).
    pub nodes: Vec<NodeReport>,
    /// The run's wall time.
    pub total: Duration,
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
        let width = self.nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
        writeln!(f, "{:width$}  {:>9}  {:>9}  {:>8}  outcome", "node", "start ms", "end ms", "attempts")?;
        for n in &self.nodes {
            let outcome = match &n.outcome {
                NodeOutcome::Failed(e) => format!("failed: {e}"),
                other => format!("{other:?}").to_lowercase(),
            };
            writeln!(
                f,
                "{:width$}  {:>9}  {:>9}  {:>8}  {outcome}",
                n.name,
                ms(n.started),
                ms(n.finished),
                n.attempts
            )?;
        }
        write!(f, "total {:.1} ms", self.total.as_secs_f64() * 1e3)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Done,
    Skipped,
    Failed,
}

/// Runs the nodes; returns the output node's value and the report.
pub(super) async fn run(
    nodes: &[NodeSpec],
    output: usize,
    input: Value,
    ctx: &RunContext,
) -> (Result<Value>, RunReport) {
    let start = Instant::now();
    let n = nodes.len();
    let mut status = vec![Status::Waiting; n];
    let mut values: Vec<Option<Value>> = vec![None; n];
    let mut report: Vec<NodeReport> = nodes
        .iter()
        .map(|s| NodeReport {
            name: s.name.clone(),
            started: None,
            finished: None,
            outcome: NodeOutcome::NotRun,
            attempts: 0,
        })
        .collect();
    status[0] = Status::Done;
    values[0] = Some(input);
    report[0].outcome = NodeOutcome::Succeeded;
    report[0].started = Some(Duration::ZERO);
    report[0].finished = Some(Duration::ZERO);

    let mut running = FuturesUnordered::new();
    let mut failure = None;
    // The ids of each started node, and the routing decision it ran on.
    let mut ids: Vec<Option<(CallIds, Option<Arc<str>>)>> = vec![None; n];
    loop {
        // Resolve or start every node whose dependencies are all resolved; resolving one can ready others.
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..n {
                if status[i] != Status::Waiting {
                    continue;
                }
                let spec = &nodes[i];
                if spec.deps.iter().any(|&d| matches!(status[d], Status::Waiting | Status::Running)) {
                    continue;
                }
                changed = true;
                let now = start.elapsed();
                let skip = match &spec.kind {
                    Kind::Merge => false,
                    _ => {
                        spec.deps.iter().any(|&d| status[d] == Status::Skipped)
                            || spec
                                .condition
                                .as_ref()
                                .is_some_and(|c| !values[c.branch].as_ref().is_some_and(|v| (c.matches)(route_of(v))))
                    }
                };
                if skip {
                    status[i] = Status::Skipped;
                    report[i].outcome = NodeOutcome::Skipped;
                    tracing::debug!(node = %spec.name, "skipped");
                    continue;
                }
                match &spec.kind {
                    Kind::Input => {}
                    Kind::Merge => {
                        let chosen =
                            spec.deps.iter().find(|&&d| status[d] == Status::Done).and_then(|&d| values[d].clone());
                        report[i].started = Some(now);
                        report[i].finished = Some(now);
                        match chosen {
                            Some(v) => {
                                values[i] = Some(v);
                                status[i] = Status::Done;
                                report[i].outcome = NodeOutcome::Succeeded;
                            }
                            None => {
                                status[i] = Status::Skipped;
                                report[i].outcome = NodeOutcome::Skipped;
                            }
                        }
                    }
                    Kind::Task(runner) | Kind::Branch(runner) => {
                        let inputs: Vec<Value> =
                            spec.deps.iter().take(spec.inputs).filter_map(|&d| values[d].clone()).collect();
                        status[i] = Status::Running;
                        report[i].started = Some(now);
                        let reason =
                            spec.condition.as_ref().and_then(|c| values[c.branch].as_ref()).and_then(reason_of);
                        let (node_ctx, node_ids) = ctx.enter(&spec.name);
                        ctx.announce(|| RunUpdate::NodeStarted { ids: node_ids.clone() });
                        let node_ctx = node_ctx.with_route_reason(reason.clone());
                        ids[i] = Some((node_ids, reason));
                        let span = tracing::info_span!("node", name = %spec.name, otel.name = %format_args!("node {}", spec.name));
                        running.push(attempts(i, spec, runner.clone(), inputs, node_ctx).instrument(span));
                    }
                }
            }
        }
        let Some((i, result, tries)) = running.next().await else { break };
        report[i].finished = Some(start.elapsed());
        report[i].attempts = tries;
        record_node(ctx, &mut ids[i], &report[i], Outcome::of(&result));
        match result {
            Ok(value) => {
                values[i] = Some(value);
                status[i] = Status::Done;
                report[i].outcome = NodeOutcome::Succeeded;
            }
            Err(error) => {
                status[i] = Status::Failed;
                report[i].outcome = NodeOutcome::Failed(error.to_string());
                failure = Some(error);
                break;
            }
        }
    }
    // Whatever is still running is dropped, and so cancelled.
    drop(running);
    for (i, s) in status.iter().enumerate() {
        if *s == Status::Running {
            report[i].outcome = NodeOutcome::Cancelled;
            report[i].finished = Some(start.elapsed());
            record_node(ctx, &mut ids[i], &report[i], Outcome::failed("cancelled: another node failed"));
        }
    }
    let report = RunReport { nodes: report, total: start.elapsed() };
    let result = match failure {
        Some(e) => Err(e),
        None => values[output].clone().ok_or_else(|| Error::Graph {
            reason: format!("the output node `{}` was skipped: no branch leading to it ran", nodes[output].name),
        }),
    };
    (result, report)
}

/// The route a branch node's value stands for (a router's value also carries its reason).
fn route_of(value: &Value) -> &Value {
    value.downcast_ref::<Routed>().map_or(value, |r| &r.route)
}

fn reason_of(value: &Value) -> Option<Arc<str>> {
    value.downcast_ref::<Routed>().map(|r| Arc::clone(&r.reason))
}

/// Records a finished node as a [`NodeEvent`].
fn record_node(ctx: &RunContext, ids: &mut Option<(CallIds, Option<Arc<str>>)>, report: &NodeReport, outcome: Outcome) {
    let Some((ids, reason)) = ids.take() else { return };
    let latency = report.finished.unwrap_or_default().saturating_sub(report.started.unwrap_or_default());
    ctx.record(RunEvent::Node(NodeEvent {
        ids,
        latency,
        attempts: report.attempts,
        outcome,
        route_reason: reason.map(|r| r.to_string()),
    }));
}

/// Runs one node: each try under its timeout, panics caught, failures retried with backoff.
async fn attempts(
    i: usize,
    spec: &NodeSpec,
    runner: super::Runner,
    inputs: Vec<Value>,
    ctx: RunContext,
) -> (usize, Result<Value>, u32) {
    let mut wait = spec.retry.backoff;
    let max = spec.retry.attempts.max(1);
    let mut tries = 0;
    loop {
        tries += 1;
        let call = AssertUnwindSafe(runner(inputs.clone(), ctx.clone())).catch_unwind();
        let outcome = match spec.timeout {
            None => Some(call.await),
            Some(t) => {
                futures::pin_mut!(call);
                match futures::future::select(call, futures_timer::Delay::new(t)).await {
                    futures::future::Either::Left((r, _)) => Some(r),
                    futures::future::Either::Right(_) => None,
                }
            }
        };
        let error = match outcome {
            Some(Ok(Ok(value))) => return (i, Ok(value), tries),
            Some(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                return (i, Err(Error::NodePanicked { node: spec.name.clone(), message }), tries);
            }
            Some(Ok(Err(e))) => name_error(&spec.name, e),
            None => Error::NodeTimeout { node: spec.name.clone(), timeout: spec.timeout.unwrap_or_default() },
        };
        if tries >= max {
            return (i, Err(error), tries);
        }
        tracing::debug!(node = %spec.name, try_ = tries, error = %error, "node failed; retrying");
        futures_timer::Delay::new(wait).await;
        wait = wait.saturating_mul(2);
    }
}

/// Puts the node's name on its error, keeping the cause as the source.
fn name_error(node: &str, error: Error) -> Error {
    match error {
        Error::Node { node: n, source } if n.is_empty() => Error::Node { node: node.to_owned(), source },
        e @ (Error::Node { .. } | Error::NodeTimeout { .. } | Error::NodePanicked { .. }) => e,
        other => Error::Node { node: node.to_owned(), source: Box::new(other) },
    }
}
