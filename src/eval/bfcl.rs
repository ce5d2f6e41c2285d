//! A reader of the Berkeley Function Calling Leaderboard's (BFCL v4) single-turn categories, as
//! [`Case`]s.
//!
//! The files come from the PyPI package `bfcl-eval` (`scripts/fetch-bfcl.sh` puts them in `models/bfcl`):
//! `BFCL_v4_<category>.json` holds the questions and functions, one JSON object a line;
//! `possible_answer/BFCL_v4_<category>.json` the accepted answers (`irrelevance` has none: no call is right).
//! BFCL's parameter types are mapped to JSON Schema ([`to_json_schema`]); function names are kept as they are,
//! dots included.
//!
//! Keep to the development split ([`dev_split`]) while tuning anything: the rest is for the final figures.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{Case, Expected, ExpectedCall, ToolSpec};
use crate::model::Message;
use crate::{Error, Result};

/// The categories this reader knows.
pub const CATEGORIES: [&str; 5] = ["simple_python", "multiple", "parallel", "irrelevance", "live_simple"];

/// The development split of a category: the ids (numeric suffixes) that may be looked at, run and tuned on.
/// `None` for a category this reader does not know.
///
/// ```
/// assert_eq!(slm_agents::eval::bfcl::dev_split("simple_python"), Some(0..=199));
/// ```
pub fn dev_split(category: &str) -> Option<RangeInclusive<usize>> {
    match category {
        "simple_python" => Some(0..=199),
        "multiple" => Some(0..=99),
        "irrelevance" => Some(0..=119),
        "live_simple" => Some(0..=99),
        "parallel" => Some(0..=49),
        _ => None,
    }
}

/// The number of a case id: the first number after the last `_` (`simple_python_12` is 12,
/// `live_simple_3-1-0` is 3).
///
/// ```
/// use slm_agents::eval::bfcl::id_number;
/// assert_eq!(id_number("simple_python_12"), Some(12));
/// assert_eq!(id_number("live_simple_3-1-0"), Some(3));
/// assert_eq!(id_number("simple_python"), None);
/// ```
pub fn id_number(id: &str) -> Option<usize> {
    let tail = &id[id.rfind('_')? + 1..];
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Parses an id range: `0-199`, or one number `7`.
///
/// ```
/// use slm_agents::eval::bfcl::parse_ids;
/// assert_eq!(parse_ids("0-199").unwrap(), 0..=199);
/// assert_eq!(parse_ids("7").unwrap(), 7..=7);
/// assert!(parse_ids("9-3").is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidSetting`] if it is not a range of numbers, or is empty.
pub fn parse_ids(text: &str) -> Result<RangeInclusive<usize>> {
    let bad = || Error::InvalidSetting { setting: "ids", reason: format!("`{text}` is not a range like 0-199") };
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// The cases whose id number ([`id_number`]) is in `ids`.
pub fn filter_ids(cases: Vec<Case>, ids: &RangeInclusive<usize>) -> Vec<Case> {
    cases.into_iter().filter(|c| id_number(&c.id).is_some_and(|n| ids.contains(&n))).collect()
}

/// Loads a category from a directory laid out like `bfcl_eval/data`: `dir/BFCL_v4_<category>.json` and
/// `dir/possible_answer/BFCL_v4_<category>.json`.
///
/// ```no_run
/// use slm_agents::eval::bfcl;
///
/// let cases = bfcl::load("models/bfcl", "simple_python")?;
/// let dev = bfcl::filter_ids(cases, &bfcl::dev_split("simple_python").unwrap());
/// assert_eq!(dev.len(), 200);
/// # Ok::<(), slm_agents::Error>(())
/// ```
///
/// # Errors
/// [`Error::Dataset`] if a file is missing or malformed, or a case has no answer.
pub fn load(dir: impl AsRef<Path>, category: &str) -> Result<Vec<Case>> {
    let dir = dir.as_ref();
    let questions_path = dir.join(format!("BFCL_v4_{category}.json"));
    let answers_path = dir.join("possible_answer").join(format!("BFCL_v4_{category}.json"));
    let questions = read_lines(&questions_path)?;
    let no_call = category.contains("irrelevance");
    let mut answers: HashMap<String, Value> = HashMap::new();
    if !no_call {
        for (line, v) in read_lines(&answers_path)? {
            let id = string_field(&v, "id", &answers_path, line)?;
            let truth = v.get("ground_truth").cloned().ok_or_else(|| bad(&answers_path, line, "no `ground_truth`"))?;
            answers.insert(id, truth);
        }
    }
    questions
        .into_iter()
        .map(|(line, q)| {
            let id = string_field(&q, "id", &questions_path, line)?;
            let messages =
                messages(&q).ok_or_else(|| bad(&questions_path, line, "`question` is not a list of turns"))?;
            let tools = functions(&q).ok_or_else(|| bad(&questions_path, line, "`function` is not a function list"))?;
            let expected = if no_call {
                Expected::NoCall
            } else {
                let truth =
                    answers.get(&id).ok_or_else(|| bad(&answers_path, 0, &format!("no possible answer for `{id}`")))?;
                expected(truth).ok_or_else(|| bad(&answers_path, 0, &format!("the answer of `{id}` is malformed")))?
            };
            Ok(Case { id, category: category.to_owned(), messages, tools, expected })
        })
        .collect()
}

fn bad(path: &Path, line: usize, reason: &str) -> Error {
    let reason = if line == 0 { reason.to_owned() } else { format!("line {line}: {reason}") };
    Error::Dataset { path: PathBuf::from(path), reason }
}

/// The non-blank lines of a JSON Lines file, parsed, with their numbers (from 1).
fn read_lines(path: &Path) -> Result<Vec<(usize, Value)>> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, 0, &format!("cannot read: {e}")))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map(|v| (i + 1, v)).map_err(|e| bad(path, i + 1, &e.to_string())))
        .collect()
}

fn string_field(v: &Value, key: &str, path: &Path, line: usize) -> Result<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| bad(path, line, &format!("no `{key}`")))
}

/// The messages of every turn, in order (single-turn categories have one turn).
fn messages(q: &Value) -> Option<Vec<Message>> {
    let turns = q.get("question")?.as_array()?;
    let mut out = Vec::new();
    for turn in turns {
        // A turn is a list of messages; some files give a single message.
        let items = match turn {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for m in items {
            out.push(serde_json::from_value(m).ok()?);
        }
    }
    Some(out)
}

/// The functions, as tools (a single function object is accepted as well as a list).
fn functions(q: &Value) -> Option<Vec<ToolSpec>> {
    let list = match q.get("function")? {
        Value::Array(items) => items.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        _ => return None,
    };
    list.iter()
        .map(|f| {
            Some(ToolSpec {
                name: f.get("name")?.as_str()?.to_owned(),
                description: f.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
                parameters: to_json_schema(f.get("parameters").unwrap_or(&json!({"type": "dict", "properties": {}}))),
            })
        })
        .collect()
}

/// `[{"func.name": {"arg": [accepted values]}}, ...]` as expected calls.
fn expected(truth: &Value) -> Option<Expected> {
    let calls = truth
        .as_array()?
        .iter()
        .map(|call| {
            let (tool, args) = call.as_object()?.iter().next()?;
            let arguments = args
                .as_object()?
                .iter()
                .map(|(name, accepted)| Some((name.clone(), accepted.as_array()?.clone())))
                .collect::<Option<BTreeMap<_, _>>>()?;
            Some(ExpectedCall { tool: tool.clone(), arguments })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(if calls.is_empty() { Expected::NoCall } else { Expected::Calls(calls) })
}

/// Maps a BFCL parameter schema to JSON Schema: `dict` is `object` (its `properties` mapped in turn, its
/// `required` kept, and no other properties allowed), `float` is `number`, `tuple` is `array`, `any` allows
/// anything; `integer`, `string`, `boolean` and `array` stay (an array's `items` mapped in turn); `enum`,
/// `description` and `default` are kept, other keys dropped. An unknown type allows anything.
///
/// ```
/// use serde_json::json;
/// let bfcl = json!({"type": "dict", "properties": {
///     "radius": {"type": "float", "description": "The radius."},
///     "center": {"type": "tuple", "items": {"type": "integer"}},
///     "unit": {"type": "string", "enum": ["m", "cm"], "default": "m"}},
///     "required": ["radius"]});
/// assert_eq!(slm_agents::eval::bfcl::to_json_schema(&bfcl), json!({"type": "object", "properties": {
///     "radius": {"type": "number", "description": "The radius."},
///     "center": {"type": "array", "items": {"type": "integer"}},
///     "unit": {"type": "string", "enum": ["m", "cm"], "default": "m"}},
///     "required": ["radius"], "additionalProperties": false}));
/// ```
pub fn to_json_schema(bfcl: &Value) -> Value {
    let Some(obj) = bfcl.as_object() else { return json!({}) };
    let mut out = Map::new();
    match obj.get("type").and_then(Value::as_str) {
        Some("dict" | "object") => {
            out.insert("type".into(), json!("object"));
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                let mapped: Map<String, Value> = props.iter().map(|(k, v)| (k.clone(), to_json_schema(v))).collect();
                let required: Vec<Value> = obj
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter(|n| n.as_str().is_some_and(|n| props.contains_key(n))).cloned().collect())
                    .unwrap_or_default();
                out.insert("properties".into(), Value::Object(mapped));
                out.insert("required".into(), Value::Array(required));
                out.insert("additionalProperties".into(), json!(false));
            }
        }
        Some("float" | "number") => {
            out.insert("type".into(), json!("number"));
        }
        Some("array" | "tuple") => {
            out.insert("type".into(), json!("array"));
            if let Some(items) = obj.get("items") {
                out.insert("items".into(), to_json_schema(items));
            }
        }
        Some(t @ ("integer" | "string" | "boolean")) => {
            out.insert("type".into(), json!(t));
        }
        _ => {}
    }
    for key in ["enum", "description", "default"] {
        if let Some(v) = obj.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Object(out)
}
