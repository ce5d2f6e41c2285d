//! The context that travels through a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::stream::Live;
use super::{CallIds, Recorder, RunEvent};
#[cfg(doc)]
use super::{MemoryRecorder, NodeEvent};
use crate::privacy::Privacy;

/// The context of one run, passed to every node, specialist and tool call in it. Cheap to clone.
///
/// It carries the run's id, its [`Privacy`] policy, the [`Recorder`] its events go to, and where in the run
/// the current code is: the graph node ([`enter`](Self::enter)) and whether it is an escalation
/// ([`escalated`](Self::escalated)).
///
/// ```
/// use std::sync::Arc;
/// use slm_agents::run::{MemoryRecorder, RunContext};
///
/// let events = Arc::new(MemoryRecorder::default());
/// let ctx = RunContext::new().with_recorder(events.clone());
/// assert!(!ctx.run_id().is_empty());
/// // ... run specialists with `&ctx`, then read `events.events()`.
/// ```
#[derive(Clone)]
pub struct RunContext {
    recorders: Vec<Arc<dyn Recorder>>,
    privacy: Privacy,
    run: Arc<str>,
    next_id: Arc<AtomicU64>,
    scope: Option<Scope>,
    escalation: Option<Arc<str>>,
    route_reason: Option<Arc<str>>,
    /// The stream the run reports to, if it runs as a [`RunStream`](super::RunStream).
    live: Option<Arc<Live>>,
}

#[derive(Clone)]
struct Scope {
    id: u64,
    path: Arc<str>,
}

impl Default for RunContext {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("run", &self.run)
            .field("node", &self.node_path())
            .field("recorders", &self.recorders.len())
            .field("privacy", &self.privacy)
            .field("escalation", &self.escalation)
            .finish()
    }
}

fn fresh_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{ms:x}-{:x}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl RunContext {
    /// A context with a fresh run id that records nothing and lets data leave the device.
    pub fn new() -> Self {
        Self {
            recorders: Vec::new(),
            privacy: Privacy::default(),
            run: fresh_run_id().into(),
            next_id: Arc::new(AtomicU64::new(0)),
            scope: None,
            escalation: None,
            route_reason: None,
            live: None,
        }
    }

    /// Sends the run's events to `recorder`, as well as to any recorders added before (for example a
    /// [`MemoryRecorder`] for the report and a [`JsonlLedger`](crate::ledger::JsonlLedger) for the file).
    #[must_use]
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorders.push(recorder);
        self
    }

    /// Sets what may leave the device during the run (default [`Privacy::Allow`]).
    #[must_use]
    pub fn with_privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = privacy;
        self
    }

    /// Sets the run's id (default: made from the time, the process id and a counter, unique on this machine).
    #[must_use]
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run = id.into().into();
        self
    }

    /// The run's id, written on every event.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The run's privacy policy; models that send data off the device obey it.
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// The path of the graph node this context is in (`None` at the top of the run).
    pub fn node_path(&self) -> Option<&str> {
        self.scope.as_ref().map(|s| &*s.path)
    }

    /// Fresh ids for an event that starts now in this context: the next id of the run, under the current
    /// node. Use it to record events of your own.
    pub fn ids(&self) -> CallIds {
        CallIds {
            run: self.run.to_string(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            parent: self.scope.as_ref().map(|s| s.id),
            node: self.node_path().map(str::to_owned),
        }
    }

    /// A context for a node named `node` inside the current one; the graph executor enters one per node, so
    /// that events inside carry its id as their parent. Returns the child and the node's ids (for its
    /// [`NodeEvent`]).
    pub fn enter(&self, node: &str) -> (RunContext, CallIds) {
        let mut ids = self.ids();
        let path: Arc<str> = match self.node_path() {
            Some(outer) => format!("{outer}/{node}").into(),
            None => node.into(),
        };
        ids.node = Some(path.to_string());
        let mut child = self.clone();
        child.scope = Some(Scope { id: ids.id, path });
        child.route_reason = None;
        (child, ids)
    }

    /// A context whose model calls are recorded as escalated, for `reason`: the work inside goes to a larger
    /// model because the small ones could not do it. Teams use it when their manager cannot plan.
    #[must_use]
    pub fn escalated(&self, reason: impl Into<String>) -> RunContext {
        let mut child = self.clone();
        child.escalation = Some(reason.into().into());
        child
    }

    /// Why work in this context is escalated, if it is.
    pub fn escalation(&self) -> Option<&str> {
        self.escalation.as_deref()
    }

    /// The routing decision that made the current node run, if it ran on a route of a router.
    pub fn route_reason(&self) -> Option<&str> {
        self.route_reason.as_deref()
    }

    pub(crate) fn with_route_reason(mut self, reason: Option<Arc<str>>) -> Self {
        self.route_reason = reason;
        self
    }

    /// Why a call of `model` made now would be escalated (see [`ModelCallEvent::escalation`]).
    pub(crate) fn escalation_for(&self, remote: bool) -> Option<String> {
        match (&self.escalation, remote) {
            (Some(reason), _) => Some(reason.to_string()),
            (None, true) => Some(self.route_reason.as_deref().unwrap_or("remote model").to_owned()),
            (None, false) => None,
        }
    }

    /// Reports an event.
    pub fn record(&self, event: RunEvent) {
        if let Some(live) = &self.live {
            live.recorded(event.clone());
        }
        if let Some((last, rest)) = self.recorders.split_last() {
            for r in rest {
                r.record(event.clone());
            }
            last.record(event);
        }
    }

    /// Whether anything listens to this run's events (a recorder, or a [`RunStream`](super::RunStream)).
    pub fn is_recording(&self) -> bool {
        !self.recorders.is_empty() || self.live.is_some()
    }

    /// The same context, reporting to a stream too (a stream streamed again reports to the inner one only).
    pub(crate) fn with_live(mut self, live: Arc<Live>) -> Self {
        self.live = Some(live);
        self
    }

    /// The stream the run reports to, if any.
    pub(crate) fn live(&self) -> Option<&Live> {
        self.live.as_deref()
    }

    /// Reports an update that only a [`RunStream`](super::RunStream) receives (made only if one listens).
    pub(crate) fn announce(&self, update: impl FnOnce() -> super::stream::Update) {
        if let Some(live) = &self.live {
            live.push(update());
        }
    }
}
