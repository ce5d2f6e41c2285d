//! S3: the curated calls clustered into recurring tasks.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use linfa::prelude::*;
use linfa_clustering::KMeans;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::{task_tool, Curated, CuratedCall};
use crate::model::LanguageModel;
use crate::router::{Decision, Router};
use crate::run::RunContext;
use crate::{Error, Result};

/// How [`cluster`] groups calls. Start from [`ClusterOptions::default`] and change what you need.
///
/// Each call becomes one vector: its request (the model's embedding, centred over the ledger, beside a
/// hashed TF-IDF bag of its words), the tool it called or whose result it answered from (one-hot, weighted
/// by `tool_weight`) and its context, the caller, system prompt and response constraint (one-hot, weighted by
/// `context_weight`). K-means ([linfa](https://docs.rs/linfa-clustering)) runs for each `k` in the range,
/// and the `k` with the best silhouette wins.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// The smallest `k` tried; `None`: the number of distinct (tool, context) groups in the calls, so that
    /// calls of different tools are never forced together (at least 2).
    pub min_k: Option<usize>,
    /// The largest `k` tried; `None`: the smallest plus 8.
    pub max_k: Option<usize>,
    /// The weight of the tool's one-hot part (default 1.5; the request's part has length 1).
    pub tool_weight: f32,
    /// The weight of the context's one-hot part (default 1.0).
    pub context_weight: f32,
    /// The weight of the words' TF-IDF beside the embedding within the request's part (default 1.0: equal).
    pub word_weight: f32,
    /// How many calls the silhouette is computed on (a stride sample beyond that; default 1,500: it costs
    /// the square of this). Beyond twice this many calls, the search over `k` runs on the sample too, and
    /// only the chosen `k` is fitted on every call.
    pub silhouette_sample: usize,
    /// K-means restarts per `k`; the best of them is kept (default 4).
    pub runs: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            min_k: None,
            max_k: None,
            tool_weight: 1.5,
            context_weight: 1.0,
            word_weight: 1.0,
            silhouette_sample: 1500,
            runs: 4,
        }
    }
}

impl ClusterOptions {
    /// Tries exactly these values of `k`.
    pub fn k_range(mut self, range: std::ops::RangeInclusive<usize>) -> Self {
        self.min_k = Some(*range.start());
        self.max_k = Some(*range.end());
        self
    }
}

/// One recurring task: a cluster of calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Its number, from 0, largest cluster first.
    pub id: usize,
    /// How many calls it holds.
    pub size: usize,
    /// A name for people: its dominant tool (or "answers in words") and its most central request.
    pub label: String,
    /// The tool most of its calls called (or answered from); `None` when most answered in words.
    pub tool: Option<String>,
    /// The share of its calls with that tool (or without one, for `None`).
    pub tool_share: f64,
    /// Its most central distinct requests, most central first (up to 3).
    pub examples: Vec<String>,
    /// How many of its calls each caller (specialist, manager, router) made.
    pub callers: BTreeMap<String, usize>,
    /// How many of its calls each model served.
    pub models: BTreeMap<String, usize>,
    /// How many of its calls went to a large model.
    pub escalated: usize,
    /// Whether its calls answer in words without a tool: open-ended work that should stay on the large
    /// model unless a small one proves itself on it.
    pub open_ended: bool,
    /// The centre of its requests' text features (what [`ClusterRouter`] compares new requests with).
    pub centroid: Vec<f32>,
}

/// How requests become text features; kept with the clustering so that new requests land in the same space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextFeatures {
    /// The mean embedding of the ledger's requests (subtracted before normalizing: a decoder model's
    /// embeddings share a large common part).
    pub mean: Vec<f32>,
    /// The inverse document frequency of each word bucket.
    pub idf: Vec<f32>,
    /// The weight of the words beside the embedding.
    pub word_weight: f32,
}

const BUCKETS: usize = 512;

impl TextFeatures {
    fn fit(requests: &[&str], embeddings: &[Vec<f32>], word_weight: f32) -> Self {
        let mean = super::mean(embeddings);
        let mut df = vec![0usize; BUCKETS];
        for r in requests {
            let mut seen = vec![false; BUCKETS];
            for b in buckets(r) {
                if !seen[b] {
                    seen[b] = true;
                    df[b] += 1;
                }
            }
        }
        let docs = requests.len() as f32;
        let idf = df.iter().map(|&d| ((1.0 + docs) / (1.0 + d as f32)).ln() + 1.0).collect();
        Self { mean, idf, word_weight }
    }

    /// The unit-length text vector of a request, from its embedding.
    pub fn vector(&self, request: &str, embedding: &[f32]) -> Vec<f32> {
        let mut e: Vec<f32> =
            embedding.iter().zip(self.mean.iter().chain(std::iter::repeat(&0.0))).map(|(x, m)| x - m).collect();
        normalize(&mut e);
        let mut w = vec![0f32; BUCKETS];
        for b in buckets(request) {
            w[b] += self.idf[b];
        }
        normalize(&mut w);
        w.iter_mut().for_each(|x| *x *= self.word_weight);
        e.extend(w);
        normalize(&mut e);
        e
    }
}

/// Lower-cased words and word pairs of a text, hashed into buckets.
fn buckets(text: &str) -> Vec<usize> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
    let mut out: Vec<usize> = words.iter().map(|w| hash(w) % BUCKETS).collect();
    out.extend(words.windows(2).map(|p| hash(&format!("{} {}", p[0], p[1])) % BUCKETS));
    out
}

/// FNV-1a: stable across runs and platforms (the buckets are saved with a clustering).
pub(crate) fn hash(text: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The result of [`cluster`]: the recurring tasks, and which task each curated call belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clustering {
    /// The clusters, largest first.
    pub clusters: Vec<Cluster>,
    /// The cluster of each curated call, in the order of [`Curated::calls`].
    pub assignments: Vec<usize>,
    /// Each `k` tried, with its silhouette (from -1 to 1; higher is better separated).
    pub tried: Vec<(usize, f64)>,
    /// The `k` chosen.
    pub k: usize,
    /// How requests become features (for [`Clustering::router`]).
    pub text: TextFeatures,
}

impl Clustering {
    /// The calls of cluster `id`, in ledger order.
    pub fn calls_of<'a>(&'a self, curated: &'a Curated, id: usize) -> impl Iterator<Item = &'a CuratedCall> + 'a {
        curated.calls.iter().zip(&self.assignments).filter(move |(_, &k)| k == id).map(|(c, _)| c)
    }

    /// A router from requests to clusters: nearest centroid by cosine, `None` below `threshold` (0 routes
    /// every request). It embeds with `model`, which must be the model the clustering embedded with.
    pub fn router(&self, model: std::sync::Arc<dyn LanguageModel>, threshold: f32) -> ClusterRouter {
        ClusterRouter {
            model,
            text: self.text.clone(),
            centroids: self.clusters.iter().map(|c| (c.id, c.label.clone(), c.centroid.clone())).collect(),
            threshold,
        }
    }
}

impl fmt::Display for Clustering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tried: Vec<String> = self.tried.iter().map(|(k, s)| format!("{k}: {s:.3}")).collect();
        writeln!(f, "k = {} (silhouette by k: {})", self.k, tried.join(", "))?;
        for c in &self.clusters {
            let served: Vec<String> = c.models.iter().map(|(m, n)| format!("{m} {n}")).collect();
            writeln!(
                f,
                "  {:>3}  {:>5} calls  {:<28} {}{}",
                c.id,
                c.size,
                c.tool.as_deref().unwrap_or("(answers in words)"),
                c.examples.first().map(String::as_str).unwrap_or(""),
                if served.is_empty() { String::new() } else { format!("  [{}]", served.join(", ")) }
            )?;
        }
        Ok(())
    }
}

/// Step S3 of the conversion loop: embeds each curated call's request with `model` (each distinct request
/// once) and clusters the calls into recurring tasks; see [`ClusterOptions`] and [`fit`].
///
/// # Errors
/// Any error of the embedding model.
pub async fn cluster(curated: &Curated, model: &dyn LanguageModel, options: &ClusterOptions) -> Result<Clustering> {
    let embeddings = embed_requests(curated, model).await?;
    fit(curated, &embeddings, options)
}

/// The embedding of each curated call's request, each distinct request embedded once (a call turn and the
/// turns that follow its tool's result share their request).
///
/// # Errors
/// Any error of the embedding model.
pub async fn embed_requests(curated: &Curated, model: &dyn LanguageModel) -> Result<Vec<Vec<f32>>> {
    let mut distinct: Vec<String> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut of_call = Vec::with_capacity(curated.calls.len());
    for call in &curated.calls {
        let r = call.request();
        let i = *index.entry(r).or_insert_with(|| {
            distinct.push(r.to_owned());
            distinct.len() - 1
        });
        of_call.push(i);
    }
    let vectors = if distinct.is_empty() { Vec::new() } else { model.embed(&distinct).await? };
    Ok(of_call.into_iter().map(|i| vectors.get(i).cloned().unwrap_or_default()).collect())
}

/// Clusters curated calls from their requests' embeddings (one per call, as [`embed_requests`] returns);
/// [`cluster`] embeds and calls this.
///
/// # Errors
/// [`Error::InvalidSetting`] when the embeddings do not match the calls in number, or the range of `k` is
/// empty.
pub fn fit(curated: &Curated, embeddings: &[Vec<f32>], options: &ClusterOptions) -> Result<Clustering> {
    let calls = &curated.calls;
    if embeddings.len() != calls.len() {
        return Err(Error::InvalidSetting {
            setting: "embeddings",
            reason: format!("{} embeddings for {} calls", embeddings.len(), calls.len()),
        });
    }
    let requests: Vec<&str> = calls.iter().map(CuratedCall::request).collect();
    let text = TextFeatures::fit(&requests, embeddings, options.word_weight);
    let texts: Vec<Vec<f32>> = requests.iter().zip(embeddings).map(|(r, e)| text.vector(r, e)).collect();
    let tools: Vec<Option<String>> = calls.iter().map(task_tool).collect();
    let contexts: Vec<String> = calls.iter().map(context_key).collect();
    let tool_index = index_of(&tools);
    let context_index = index_of(&contexts);
    let groups = tools.iter().zip(&contexts).collect::<std::collections::HashSet<_>>().len();

    let dim = texts.first().map_or(0, Vec::len);
    let width = dim + tool_index.len() + context_index.len();
    let n = calls.len();
    let mut data = Array2::<f32>::zeros((n, width));
    for (i, row) in texts.iter().enumerate() {
        for (j, x) in row.iter().enumerate() {
            data[[i, j]] = *x;
        }
        data[[i, dim + tool_index[&tools[i]]]] = options.tool_weight;
        data[[i, dim + tool_index.len() + context_index[&contexts[i]]]] = options.context_weight;
    }

    let min_k = options.min_k.unwrap_or(groups.max(2)).max(1);
    let max_k = options.max_k.unwrap_or(min_k + 8).min(n.saturating_sub(1)).max(min_k.min(n.max(1)));
    if options.max_k.is_some_and(|m| m < min_k) {
        return Err(Error::InvalidSetting { setting: "k", reason: format!("the range {min_k}..={max_k} is empty") });
    }
    let (k, assignments, tried) = if n < 3 {
        (1.min(n), vec![0; n], Vec::new())
    } else {
        choose_k(&data, min_k.min(n - 1).max(2), max_k.max(2), options)
    };

    // Number clusters by size, largest first.
    let mut sizes = vec![0usize; k.max(1)];
    for &a in &assignments {
        sizes[a] += 1;
    }
    let mut order: Vec<usize> = (0..sizes.len()).filter(|&c| sizes[c] > 0).collect();
    order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]).then(a.cmp(b)));
    let renumber: HashMap<usize, usize> = order.iter().enumerate().map(|(new, &old)| (old, new)).collect();
    let assignments: Vec<usize> = assignments.iter().map(|a| renumber[a]).collect();

    let clusters = (0..order.len()).map(|id| describe(id, calls, &assignments, &data, &texts, &tools)).collect();
    tracing::info!(calls = n, k = order.len(), "clustered the curated calls");
    Ok(Clustering { clusters, assignments, tried, k: order.len(), text })
}

/// Runs k-means for each `k` and keeps the best silhouette.
/// Runs k-means for each `k` and keeps the best silhouette. Beyond twice the silhouette sample, the search
/// runs on the sample and only the chosen `k` is fitted on every call.
fn choose_k(
    data: &Array2<f32>,
    min_k: usize,
    max_k: usize,
    options: &ClusterOptions,
) -> (usize, Vec<usize>, Vec<(usize, f64)>) {
    let n = data.nrows();
    let size = options.silhouette_sample.max(2 * max_k).min(n);
    let sample: Vec<usize> = (0..size).map(|i| i * n / size).collect();
    let sampled = data.select(ndarray::Axis(0), &sample);
    let search_on_sample = n > 2 * size;
    let search = if search_on_sample { sampled.clone() } else { data.clone() };
    let dataset = DatasetBase::from(search);
    let fit = |k: usize, on: &DatasetBase<Array2<f32>, _>| {
        KMeans::params(k).n_runs(options.runs.max(1)).max_n_iterations(100).tolerance(1e-4).fit(on).ok()
    };
    let mut best: Option<(f64, usize, Vec<usize>)> = None;
    let mut tried = Vec::new();
    for k in min_k..=max_k {
        let Some(model) = fit(k, &dataset) else { continue };
        let sample_labels = model.predict(&sampled);
        let score = DatasetBase::new(sampled.clone(), sample_labels).silhouette_score().map_or(-1.0, f64::from);
        tracing::debug!(k, silhouette = score, "k-means");
        tried.push((k, score));
        if best.as_ref().is_none_or(|(s, _, _)| score > *s + 1e-9) {
            let labels = if search_on_sample { Vec::new() } else { model.predict(data).to_vec() };
            best = Some((score, k, labels));
        }
    }
    match best {
        Some((_, k, labels)) if !search_on_sample => (k, labels, tried),
        Some((_, k, _)) => match fit(k, &DatasetBase::from(data.clone())) {
            Some(model) => (k, model.predict(data).to_vec(), tried),
            None => (1, vec![0; n], tried),
        },
        None => (1, vec![0; n], tried),
    }
}

fn describe(
    id: usize,
    calls: &[CuratedCall],
    assignments: &[usize],
    data: &Array2<f32>,
    texts: &[Vec<f32>],
    tools: &[Option<String>],
) -> Cluster {
    let members: Vec<usize> = (0..calls.len()).filter(|&i| assignments[i] == id).collect();
    let width = data.ncols();
    let mut centre = vec![0f32; width];
    let mut text_centre = vec![0f32; texts.first().map_or(0, Vec::len)];
    for &i in &members {
        for (c, x) in centre.iter_mut().zip(data.row(i).iter()) {
            *c += x;
        }
        for (c, x) in text_centre.iter_mut().zip(&texts[i]) {
            *c += x;
        }
    }
    let m = members.len().max(1) as f32;
    centre.iter_mut().for_each(|c| *c /= m);
    text_centre.iter_mut().for_each(|c| *c /= m);

    let mut tool_counts: HashMap<&Option<String>, usize> = HashMap::new();
    for &i in &members {
        *tool_counts.entry(&tools[i]).or_default() += 1;
    }
    let (tool, count) = tool_counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(t, n)| (t.clone(), n))
        .unwrap_or((None, 0));

    let mut by_distance: Vec<(f32, usize)> = members
        .iter()
        .map(|&i| (data.row(i).iter().zip(&centre).map(|(x, c)| (x - c) * (x - c)).sum::<f32>(), i))
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut examples: Vec<String> = Vec::new();
    for (_, i) in by_distance {
        let r = calls[i].request().trim().to_owned();
        if !r.is_empty() && !examples.contains(&r) {
            examples.push(r);
        }
        if examples.len() == 3 {
            break;
        }
    }
    let mut callers = BTreeMap::new();
    let mut models = BTreeMap::new();
    for &i in &members {
        *callers.entry(calls[i].caller.clone()).or_default() += 1;
        *models.entry(calls[i].model.clone()).or_default() += 1;
    }
    let first = examples.first().map(|e| shorten(e, 60)).unwrap_or_default();
    Cluster {
        id,
        size: members.len(),
        label: format!("{}: {first}", tool.as_deref().unwrap_or("answers in words")),
        open_ended: tool.is_none(),
        tool,
        tool_share: count as f64 / members.len().max(1) as f64,
        examples,
        callers,
        models,
        escalated: members.iter().filter(|&&i| calls[i].escalated).count(),
        centroid: text_centre,
    }
}

fn shorten(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(chars).collect::<String>())
    }
}

/// Who asked, and under what instructions and constraint: calls in different contexts are different tasks.
fn context_key(call: &CuratedCall) -> String {
    let system: String =
        call.messages.iter().filter(|m| m.role == crate::model::Role::System).map(|m| m.content.as_str()).collect();
    let constraint = call.constraint.as_ref().map(|c| serde_json::to_string(c).unwrap_or_default()).unwrap_or_default();
    format!("{}\u{1f}{:x}\u{1f}{:x}", call.caller, hash(&system), hash(&constraint))
}

fn index_of<T: std::hash::Hash + Eq + Clone + Ord>(values: &[T]) -> HashMap<T, usize> {
    let mut distinct: Vec<T> = values.to_vec();
    distinct.sort();
    distinct.dedup();
    distinct.into_iter().enumerate().map(|(i, v)| (v, i)).collect()
}

/// The share of calls whose cluster's most common true label is their own: 1.0 when no cluster mixes
/// tasks. `truth` holds the true label of each call, in the order of `assignments`.
///
/// ```
/// let purity = slm_agents::distill::purity(&[0, 0, 1, 1], &["a", "a", "b", "a"]);
/// assert_eq!(purity, 0.75);
/// ```
pub fn purity<T: std::hash::Hash + Eq>(assignments: &[usize], truth: &[T]) -> f64 {
    let mut counts: HashMap<usize, HashMap<&T, usize>> = HashMap::new();
    for (a, t) in assignments.iter().zip(truth) {
        *counts.entry(*a).or_default().entry(t).or_default() += 1;
    }
    let right: usize = counts.values().map(|c| c.values().copied().max().unwrap_or(0)).sum();
    right as f64 / assignments.len().min(truth.len()).max(1) as f64
}

/// Routes requests to the clusters of a [`Clustering`]: the request's text features, compared by cosine with
/// each cluster's centroid. From [`Clustering::router`]; the route is the cluster's id, or `None` when no
/// centroid is within the threshold.
pub struct ClusterRouter {
    model: std::sync::Arc<dyn LanguageModel>,
    text: TextFeatures,
    centroids: Vec<(usize, String, Vec<f32>)>,
    threshold: f32,
}

impl fmt::Debug for ClusterRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterRouter")
            .field("model", &self.model.name())
            .field("clusters", &self.centroids.len())
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl ClusterRouter {
    /// Each cluster's similarity to `request`, best first.
    ///
    /// # Errors
    /// Any error of the embedding model.
    pub async fn similarities(&self, request: &str, ctx: &RunContext) -> Result<Vec<(usize, f32)>> {
        let e = ctx.embed(&*self.model, &[request.to_owned()]).await?.pop().unwrap_or_default();
        let v = self.text.vector(request, &e);
        let mut scored: Vec<(usize, f32)> =
            self.centroids.iter().map(|(id, _, c)| (*id, crate::router::cosine(&v, c))).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(scored)
    }
}

#[async_trait::async_trait]
impl Router<Option<usize>> for ClusterRouter {
    async fn route(&self, task: &str, ctx: &RunContext) -> Result<Decision<Option<usize>>> {
        let scored = self.similarities(task, ctx).await?;
        let Some(&(id, similarity)) = scored.first() else {
            return Ok(Decision { route: None, confidence: 0.0, reason: "no clusters".into() });
        };
        let label = self.centroids.iter().find(|c| c.0 == id).map_or("", |c| c.1.as_str());
        if similarity < self.threshold {
            return Ok(Decision {
                route: None,
                confidence: similarity.clamp(0.0, 1.0),
                reason: format!("nearest cluster {id} ({label}) at {similarity:.2}, below {:.2}", self.threshold),
            });
        }
        Ok(Decision {
            route: Some(id),
            confidence: similarity.clamp(0.0, 1.0),
            reason: format!("cluster {id} ({label}) at {similarity:.2}"),
        })
    }
}
