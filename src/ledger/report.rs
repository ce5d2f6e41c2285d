//! The cost model and the per-run report: calls, tokens, latency and cost per specialist and model, against
//! what the same calls would have cost on a large model.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LedgerRecord;
use crate::model::Usage;
use crate::run::{ModelCallEvent, RunEvent};

/// What a model costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Price {
    /// A price per million tokens, as remote APIs charge.
    PerMillionTokens {
        /// Per million prompt tokens.
        input: f64,
        /// Per million generated tokens.
        output: f64,
    },
    /// A local model: the cost of an hour of the device, charged for each call's wall time. Calls that overlap
    /// are each charged in full, so this is an upper bound for parallel runs.
    PerHour(f64),
    /// A local model: energy per token (prompt and generated alike) at a price per kilowatt-hour.
    Energy {
        /// Joules per token.
        joules_per_token: f64,
        /// Price of a kilowatt-hour.
        per_kwh: f64,
    },
    /// Costs nothing (the default for models without a price).
    Free,
}

impl Price {
    /// The cost of one call with this usage and wall time.
    pub fn cost(&self, usage: &Usage, latency: Duration) -> f64 {
        let tokens = (usage.prompt_tokens + usage.completion_tokens) as f64;
        match *self {
            Self::PerMillionTokens { input, output } => {
                (usage.prompt_tokens as f64 * input + usage.completion_tokens as f64 * output) / 1e6
            }
            Self::PerHour(rate) => latency.as_secs_f64() / 3600.0 * rate,
            Self::Energy { joules_per_token, per_kwh } => tokens * joules_per_token / 3.6e6 * per_kwh,
            Self::Free => 0.0,
        }
    }
}

/// Prices per model, and the large model every run is compared with.
///
/// ```
/// use slm_agents::ledger::{CostModel, Price};
///
/// let costs = CostModel::new()
///     .price("SmolLM2-135M-Instruct", Price::PerHour(0.05))
///     .baseline("large model", Price::PerMillionTokens { input: 2.50, output: 10.00 })
///     .currency("USD");
/// assert_eq!(costs.baseline_name(), Some("large model"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    prices: BTreeMap<String, Price>,
    default: Price,
    baseline: Option<(String, Price)>,
    currency: String,
}

impl Default for CostModel {
    fn default() -> Self {
        Self::new()
    }
}

impl CostModel {
    /// No prices (every model free), no baseline, currency "USD".
    pub fn new() -> Self {
        Self { prices: BTreeMap::new(), default: Price::Free, baseline: None, currency: "USD".into() }
    }

    /// Sets the price of the model called `model` (its [`LanguageModel::name`](crate::model::LanguageModel::name)).
    #[must_use]
    pub fn price(mut self, model: impl Into<String>, price: Price) -> Self {
        self.prices.insert(model.into(), price);
        self
    }

    /// Sets the price of models without one of their own (default [`Price::Free`]).
    #[must_use]
    pub fn default_price(mut self, price: Price) -> Self {
        self.default = price;
        self
    }

    /// Sets the large model to compare with: what every call would have cost on it, for the same tokens.
    #[must_use]
    pub fn baseline(mut self, name: impl Into<String>, price: Price) -> Self {
        self.baseline = Some((name.into(), price));
        self
    }

    /// Sets the currency's name, for printing.
    #[must_use]
    pub fn currency(mut self, currency: impl Into<String>) -> Self {
        self.currency = currency.into();
        self
    }

    /// The baseline's name, if one is set.
    pub fn baseline_name(&self) -> Option<&str> {
        self.baseline.as_ref().map(|(n, _)| n.as_str())
    }

    /// The price of `model`.
    pub fn price_of(&self, model: &str) -> Price {
        self.prices.get(model).copied().unwrap_or(self.default)
    }

    fn call_cost(&self, call: &ModelCallEvent) -> (f64, f64) {
        let usage = call.usage.unwrap_or_default();
        let ours = self.price_of(&call.model).cost(&usage, call.latency);
        let baseline = self.baseline.as_ref().map_or(0.0, |(_, p)| p.cost(&usage, call.latency));
        (ours, baseline)
    }
}

/// One line of a [`Report`]: the calls of one specialist on one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// Who made the calls (a specialist, `team/manager`, `router`, or `all` for the total).
    pub specialist: String,
    /// The model (empty for a specialist that only called tools, `all` for the total).
    pub model: String,
    /// Model calls.
    pub calls: usize,
    /// Tool calls made by the specialist (counted on its first row).
    pub tool_calls: usize,
    /// Model and tool calls that failed.
    pub failed: usize,
    /// Model calls that were escalated.
    pub escalated: usize,
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: usize,
    /// Prompt tokens reused from the prefix cache.
    pub cached_prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Sum of the model calls' wall times.
    pub latency: Duration,
    /// Sum of the model calls' times to first token.
    pub time_to_first_token: Duration,
    /// Cost on the models that ran.
    pub cost: f64,
    /// Cost of the same tokens on the baseline model.
    pub baseline_cost: f64,
}

impl ReportRow {
    fn add(&mut self, other: &ReportRow) {
        self.calls += other.calls;
        self.tool_calls += other.tool_calls;
        self.failed += other.failed;
        self.escalated += other.escalated;
        self.prompt_tokens += other.prompt_tokens;
        self.cached_prompt_tokens += other.cached_prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.latency += other.latency;
        self.time_to_first_token += other.time_to_first_token;
        self.cost += other.cost;
        self.baseline_cost += other.baseline_cost;
    }

    /// How many times cheaper these calls were than on the baseline (`None` when they cost nothing).
    pub fn savings(&self) -> Option<f64> {
        (self.cost > 0.0).then(|| self.baseline_cost / self.cost)
    }
}

/// A run's calls, tokens, latency and cost per specialist and model, with totals and the baseline.
///
/// Build it from events ([`MemoryRecorder::events`](crate::run::MemoryRecorder::events)) or from a JSON Lines
/// ledger ([`read_jsonl`](super::read_jsonl)); print it as a table (`Display`) or draw it as an SVG bar chart
/// ([`Report::to_svg`]).
///
/// ```
/// use slm_agents::ledger::{CostModel, Price, Report};
///
/// let costs = CostModel::new().baseline("large model", Price::PerMillionTokens { input: 2.5, output: 10.0 });
/// let report = Report::from_events(&[], &costs);
/// assert_eq!(report.total.calls, 0);
/// println!("{report}");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// One row per (specialist, model), in order of first appearance.
    pub rows: Vec<ReportRow>,
    /// The sum of the rows.
    pub total: ReportRow,
    /// The baseline model's name, if the cost model has one.
    pub baseline: Option<String>,
    /// The currency's name.
    pub currency: String,
}

impl Report {
    /// The report of these events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a RunEvent>, costs: &CostModel) -> Self {
        let mut rows: Vec<ReportRow> = Vec::new();
        let find = |rows: &mut Vec<ReportRow>, specialist: &str, model: Option<&str>| -> usize {
            let at = rows.iter().position(|r| r.specialist == specialist && model.is_none_or(|m| r.model == m));
            at.unwrap_or_else(|| {
                rows.push(ReportRow {
                    specialist: specialist.to_owned(),
                    model: model.unwrap_or_default().to_owned(),
                    ..ReportRow::default()
                });
                rows.len() - 1
            })
        };
        for event in events {
            match event {
                RunEvent::ModelCall(call) => {
                    let i = find(&mut rows, &call.specialist, Some(&call.model));
                    let usage = call.usage.unwrap_or_default();
                    let (cost, baseline_cost) = costs.call_cost(call);
                    rows[i].add(&ReportRow {
                        calls: 1,
                        failed: usize::from(!call.outcome.is_success()),
                        escalated: usize::from(call.escalation.is_some()),
                        prompt_tokens: usage.prompt_tokens,
                        cached_prompt_tokens: usage.cached_prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                        latency: call.latency,
                        time_to_first_token: usage.time_to_first_token,
                        cost,
                        baseline_cost,
                        ..ReportRow::default()
                    });
                }
                RunEvent::ToolCall(call) => {
                    let i = find(&mut rows, &call.specialist, None);
                    rows[i].tool_calls += 1;
                    rows[i].failed += usize::from(!call.outcome.is_success());
                }
                _ => {}
            }
        }
        let mut total = ReportRow { specialist: "all".into(), model: "all".into(), ..ReportRow::default() };
        for row in &rows {
            total.add(row);
        }
        Self { rows, total, baseline: costs.baseline_name().map(str::to_owned), currency: costs.currency.clone() }
    }

    /// The report of a ledger's records.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a LedgerRecord>, costs: &CostModel) -> Self {
        Self::from_events(records.into_iter().map(|r| &r.event), costs)
    }

    /// An SVG bar chart of the cost per specialist and model, next to the baseline's, on a logarithmic scale
    /// (the two differ by orders of magnitude). Self-contained: no scripts, no external fonts.
    pub fn to_svg(&self) -> String {
        svg(self)
    }
}

fn money(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x >= 0.01 {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cur = &self.currency;
        let header = [
            "specialist".to_owned(),
            "model".to_owned(),
            "calls".to_owned(),
            "tools".to_owned(),
            "failed".to_owned(),
            "escal.".to_owned(),
            "prompt tok".to_owned(),
            "cached".to_owned(),
            "gen tok".to_owned(),
            "time s".to_owned(),
            "ttft s".to_owned(),
            format!("cost {cur}"),
            format!("baseline {cur}"),
        ];
        let line = |r: &ReportRow| {
            vec![
                r.specialist.clone(),
                r.model.clone(),
                r.calls.to_string(),
                r.tool_calls.to_string(),
                r.failed.to_string(),
                r.escalated.to_string(),
                r.prompt_tokens.to_string(),
                r.cached_prompt_tokens.to_string(),
                r.completion_tokens.to_string(),
                format!("{:.2}", r.latency.as_secs_f64()),
                format!("{:.2}", r.time_to_first_token.as_secs_f64()),
                money(r.cost),
                if self.baseline.is_some() { money(r.baseline_cost) } else { "-".into() },
            ]
        };
        let mut table: Vec<Vec<String>> = vec![header.to_vec()];
        table.extend(self.rows.iter().map(line));
        table.push(line(&self.total));
        let widths: Vec<usize> =
            (0..header.len()).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for (n, row) in table.iter().enumerate() {
            if n == table.len() - 1 {
                writeln!(f, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "))?;
            }
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| if c < 2 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
                .collect();
            writeln!(f, "{}", cells.join("  ").trim_end())?;
        }
        match (self.baseline.as_deref(), self.total.savings()) {
            (Some(base), Some(x)) => write!(f, "baseline: {base}; the same calls there would cost {x:.0}x as much"),
            (Some(base), None) => {
                write!(f, "these calls cost nothing here; on {base}: {} {cur}", money(self.total.baseline_cost))
            }
            (None, _) => write!(f, "no baseline model configured"),
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Grouped horizontal bars, log10 scale, one group per row plus the total.
fn svg(report: &Report) -> String {
    use std::fmt::Write as _;
    let rows: Vec<&ReportRow> = report.rows.iter().chain(std::iter::once(&report.total)).collect();
    let values: Vec<f64> =
        rows.iter().flat_map(|r| [r.cost, r.baseline_cost]).filter(|v| *v > 0.0 && v.is_finite()).collect();
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (lo, hi) = if values.is_empty() {
        (-6.0, 0.0)
    } else {
        (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0))
    };
    let label = |row: &ReportRow| {
        if row.model.is_empty() || row.model == "all" {
            row.specialist.clone()
        } else {
            format!("{} ({})", row.specialist, row.model)
        }
    };
    // About 7 px a character at 12 px sans-serif.
    let longest = rows.iter().map(|r| label(r).chars().count()).max().unwrap_or(0) as f64;
    let (left, width, bar, gap, top) = (longest * 7.0 + 20.0, 420.0, 14.0, 12.0, 40.0);
    let height = top + rows.len() as f64 * (2.0 * bar + gap) + 40.0;
    let x = |v: f64| if v <= 0.0 { 0.0 } else { ((v.log10() - lo) / (hi - lo)).clamp(0.0, 1.0) * width };
    let base = escape(report.baseline.as_deref().unwrap_or("baseline"));
    let cur = escape(&report.currency);
    let mut s = String::new();
    let title = format!("Cost per specialist ({cur}, log scale): this run vs {base}");
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = (left + width + 120.0).max(title.chars().count() as f64 * 7.5 + 60.0)
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r##"<text x="10" y="18" font-size="14">Cost per specialist ({cur}, log scale): this run <tspan fill="#2b8a3e">&#9632;</tspan> vs {base} <tspan fill="#c92a2a">&#9632;</tspan></text>"##
    );
    let mut decade = lo;
    while decade <= hi {
        let gx = left + x(10f64.powf(decade));
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{y2:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{ty:.1}" text-anchor="middle" fill="#666">1e{d}</text>"##,
            y2 = height - 30.0,
            ty = height - 14.0,
            d = decade as i32
        );
        decade += 1.0;
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as f64 * (2.0 * bar + gap);
        let label = label(row);
        let _ = writeln!(
            s,
            r#"<text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            lx = left - 8.0,
            ty = y + bar + 4.0,
            label = escape(&label)
        );
        for (k, (value, color)) in [(row.cost, "#2b8a3e"), (row.baseline_cost, "#c92a2a")].into_iter().enumerate() {
            let by = y + k as f64 * bar;
            let w = x(value).max(1.0);
            let _ = writeln!(
                s,
                r##"<rect x="{left}" y="{by:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"/><text x="{tx:.1}" y="{yy:.1}" fill="#333">{v}</text>"##,
                h = bar - 2.0,
                tx = left + w + 4.0,
                yy = by + bar - 4.0,
                v = money(value)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
