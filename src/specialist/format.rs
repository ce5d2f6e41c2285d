//! How a specialist shows its tools to the model, what its turns may be, and how a turn is read.

use serde_json::{json, Map, Value};

use crate::model::TokenLogprob;
use crate::structured::OutputSchema;
use crate::tool::{ToolCall, Toolbox};
use crate::Result;

/// How a [`ModelSpecialist`](super::ModelSpecialist) shows its tools to the model, and how the model writes
/// its calls.
///
/// The grammar of each turn follows the format, so either way a call always names an offered tool with
/// arguments of the right shape; the format decides what the model *reads*. Which format suits a model is
/// measured, not assumed: SmolLM2-135M does worse with the format of its own function-calling training data
/// than with the shortest one (docs/eval.md has the figures, and `examples/bfcl.rs --format` measures yours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ToolFormat {
    /// One line per tool, `name(arg: type (description), ..): description`, and one call per turn,
    /// `{"tool": "..", "arguments": {..}}`, or the answer, `{"answer": ..}` (the format of slm-agents 0.1).
    /// Required arguments, defaults and allowed values are left to the grammar, which enforces them. The
    /// shortest prompt, and the best format for SmolLM2-135M (docs/eval.md).
    #[default]
    Compact,
    /// Each tool on a line of its own, then one line per argument with its type, whether it is required, its
    /// default and its allowed values:
    ///
    /// ```text
    /// - get_weather: Current weather in a city.
    ///   city (string, required): The city.
    ///   unit (one of "celsius", "fahrenheit", optional, default "celsius")
    /// ```
    ///
    /// The reply is one call, `{"tool": "..", "arguments": {..}}`, or the answer, `{"answer": ..}`. For
    /// models that use what they are told about arguments: SmolLM2-135M does not (shown a list of allowed
    /// values, it tends to pick the first; see docs/eval.md).
    Lines,
    /// The function-calling format of the xLAM/APIGen data that many small models (SmolLM2 among them) were
    /// trained on: the tools as a JSON list with their argument schemas, and a reply that is a JSON list of
    /// calls, `[{"name": "..", "arguments": {..}}, ..]`: several calls in one turn where the request asks for
    /// several, `[]` when no tool fits (the model then answers in words). The model may also answer at once
    /// with `{"answer": ..}`. SmolLM2-135M makes more mistakes with it than with
    /// [`Compact`](Self::Compact) and loops in long lists, and its prompts are twice as long; it is the
    /// format for models that make several calls in one turn.
    Json,
}

/// The standing instructions of [`ToolFormat::Json`], as the model was trained on them.
const JSON_PREAMBLE: &str = "You are an expert in composing functions. You are given a question and a set of \
possible functions.\nBased on the question, you will need to make one or more function/tool calls to achieve the \
purpose.\nIf none of the functions can be used, point it out and refuse to answer.\nIf the given question lacks \
the parameters required by the function, also point it out.";

const JSON_REPLY: &str = "The output MUST strictly adhere to the following format, and NO other text MUST be \
included.\nThe example format is as follows. Please make sure the parameter type is correct. If no function call \
is needed, please make the tool calls an empty list '[]'.\n[\n{\"name\": \"func_name1\", \"arguments\": \
{\"argument1\": \"value1\", \"argument2\": \"value2\"}},\n... (more tool calls as required)\n]";

/// The system prompt: the host's instructions, the tools, and the reply format.
pub(super) fn system_prompt(format: ToolFormat, instructions: &str, tools: &Toolbox) -> String {
    let instructions = instructions.trim();
    if tools.is_empty() {
        let mut out = instructions.to_owned();
        out.push_str("\n\nReply with one JSON object: {\"answer\": ...}.");
        return out.trim_start().to_owned();
    }
    match format {
        ToolFormat::Json => {
            let listed: Vec<Value> = tools
                .names()
                .map(|name| {
                    let description = tools.get(name).map(|t| t.description().to_owned()).unwrap_or_default();
                    let parameters = tools.parameters(name).cloned().unwrap_or_else(|| json!({}));
                    json!({ "name": name, "description": description, "parameters": shown_schema(&parameters) })
                })
                .collect();
            let listed = serde_json::to_string(&listed).unwrap_or_default();
            let mut out = String::new();
            if !instructions.is_empty() {
                out.push_str(instructions);
                out.push_str("\n\n");
            }
            out.push_str(JSON_PREAMBLE);
            out.push_str("\n\nYou have access to the following tools:\n<tools>");
            out.push_str(&listed);
            out.push_str("</tools>\n\n");
            out.push_str(JSON_REPLY);
            out
        }
        ToolFormat::Lines | ToolFormat::Compact => {
            let mut out = instructions.to_owned();
            out.push_str("\n\nTools:\n");
            let lines = format == ToolFormat::Lines;
            for name in tools.names() {
                let description = tools.get(name).map(|t| t.description()).unwrap_or_default();
                if lines {
                    out.push_str(&format!("- {name}: {}\n", description.trim()));
                    if let Some(p) = tools.parameters(name) {
                        out.push_str(&describe_lines(p));
                    }
                    continue;
                }
                let params = tools.parameters(name).map(describe_parameters).unwrap_or_default();
                out.push_str(&format!("- {name}({params}): {description}\n"));
            }
            out.push_str(
                "\nReply with one JSON object: {\"tool\": \"<name>\", \"arguments\": {...}} to call a tool, \
                 or {\"answer\": ...} once you have what you need.",
            );
            out.trim_start().to_owned()
        }
    }
}

/// A tool's argument schema as the model reads it: what a caller needs (types, descriptions, required,
/// enum values, defaults, item types, bounds), without the schema's bookkeeping (`$schema`, `title`,
/// `additionalProperties`, formats of integer widths).
fn shown_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "$schema" | "title" | "additionalProperties" | "$id" | "$comment" | "examples" => {}
                    "format" if value.as_str().is_some_and(|f| f.starts_with("int") || f.starts_with("uint")) => {}
                    "format" if matches!(value.as_str(), Some("float" | "double")) => {}
                    "properties" => {
                        let props = value
                            .as_object()
                            .map(|p| p.iter().map(|(k, v)| (k.clone(), shown_schema(v))).collect::<Map<_, _>>())
                            .unwrap_or_default();
                        out.insert(key.clone(), Value::Object(props));
                    }
                    _ => {
                        out.insert(key.clone(), shown_schema(value));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(shown_schema).collect()),
        other => other.clone(),
    }
}

/// One line per argument: `  name (type, required): description`, with enum values, default and item
/// types.
fn describe_lines(schema: &Value) -> String {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return String::new() };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::new();
    for (name, p) in props {
        let mut facts = vec![type_words(p)];
        facts.push(if required.contains(&name.as_str()) { "required".to_owned() } else { "optional".to_owned() });
        if let Some(d) = p.get("default") {
            facts.push(format!("default {d}"));
        }
        out.push_str(&format!("  {name} ({})", facts.join(", ")));
        if let Some(d) = p.get("description").and_then(Value::as_str) {
            out.push_str(": ");
            out.push_str(d.trim());
        }
        out.push('\n');
    }
    out
}

/// `string`, `one of "a", "b"`, `array of integer`.
fn type_words(p: &Value) -> String {
    if let Some(values) = p.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(Value::to_string).collect();
        return format!("one of {}", values.join(", "));
    }
    if let Some(c) = p.get("const") {
        return format!("exactly {c}");
    }
    let ty = match p.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ => "value".to_owned(),
    };
    match (ty.as_str(), p.get("items")) {
        ("array", Some(items)) => format!("array of {}", type_words(items)),
        _ => ty,
    }
}

/// `from: string, to: string, date: string (YYYY-MM-DD)` from a JSON Schema's properties.
fn describe_parameters(schema: &Value) -> String {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return String::new() };
    props
        .iter()
        .map(|(name, p)| {
            let ty = match p.get("type") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("|"),
                _ if p.get("enum").is_some() => "enum".to_owned(),
                _ => "value".to_owned(),
            };
            match p.get("description").and_then(Value::as_str) {
                Some(d) => format!("{name}: {ty} ({})", d.trim_end_matches('.')),
                None => format!("{name}: {ty}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The grammars of a specialist's turns.
pub(super) struct Turns {
    /// A call (or calls) or the answer.
    pub decide: OutputSchema,
    /// Calls only (at least one).
    pub calls: OutputSchema,
    /// The answer only.
    pub answer: OutputSchema,
    format: ToolFormat,
    specialist: String,
    /// Per tool, in the toolbox's order, the schema of one call of it.
    one_call: Vec<Value>,
    answer_object: Value,
    max_calls: usize,
    max_tokens: u32,
}

impl Turns {
    pub(super) fn new(
        format: ToolFormat,
        specialist: &str,
        tools: &Toolbox,
        answer_schema: Value,
        max_calls: usize,
        max_tokens: u32,
    ) -> Result<Self> {
        let key = match format {
            ToolFormat::Json => "name",
            ToolFormat::Lines | ToolFormat::Compact => "tool",
        };
        let one_call: Vec<Value> = tools
            .names()
            .map(|tool| {
                json!({
                    "type": "object",
                    "properties": {
                        key: { "const": tool },
                        "arguments": within_budget(tools.parameters(tool).unwrap_or(&json!({})), max_tokens),
                    },
                    "required": [key, "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let answer_object = json!({
            "type": "object",
            "properties": { "answer": answer_schema },
            "required": ["answer"],
            "additionalProperties": false,
        });
        let answer = OutputSchema::from_value(format!("answer of specialist {specialist}"), answer_object.clone())?
            .within_tokens(max_tokens);
        let mut turns = Self {
            decide: answer.clone(),
            calls: answer.clone(),
            answer,
            format,
            specialist: specialist.to_owned(),
            one_call,
            answer_object,
            max_calls,
            max_tokens,
        };
        let (decide, calls) = turns.among(None, None)?;
        turns.decide = decide;
        turns.calls = calls;
        Ok(turns)
    }

    /// The schemas of a turn that may call only the tools marked in `offered` (all without it), with free
    /// strings limited to `spans` if given: calls or the answer, and calls only.
    pub(super) fn among(
        &self,
        offered: Option<&[bool]>,
        spans: Option<&[String]>,
    ) -> Result<(OutputSchema, OutputSchema)> {
        let one_call: Vec<Value> = self
            .one_call
            .iter()
            .enumerate()
            .filter(|(i, _)| offered.is_none_or(|o| o.get(*i).copied().unwrap_or(true)))
            .map(|(_, c)| match spans {
                Some(spans) => {
                    let mut c = c.clone();
                    if let Some(arguments) = c.pointer_mut("/properties/arguments") {
                        *arguments = super::relevance::spans_only(arguments, spans);
                    }
                    c
                }
                None => c.clone(),
            })
            .collect();
        if one_call.is_empty() {
            // No tool (none at all, or none offered): the answer is all a turn may be.
            return Ok((self.answer.clone(), self.answer.clone()));
        }
        let (calls, no_call): (Value, Option<Value>) = match self.format {
            ToolFormat::Json => {
                let list = |min: usize| json!({ "type": "array", "items": { "anyOf": one_call }, "minItems": min, "maxItems": self.max_calls.max(1) });
                (list(1), Some(list(0)))
            }
            ToolFormat::Lines | ToolFormat::Compact => (json!({ "anyOf": one_call }), None),
        };
        let decide = match no_call {
            Some(list) => json!({ "anyOf": [list, self.answer_object.clone()] }),
            None => json!({ "anyOf": [calls.clone(), self.answer_object.clone()] }),
        };
        let name = &self.specialist;
        Ok((
            OutputSchema::from_value(format!("reply of specialist {name}"), decide)?.within_tokens(self.max_tokens),
            OutputSchema::from_value(format!("tool calls of specialist {name}"), calls)?.within_tokens(self.max_tokens),
        ))
    }
}

/// A tool's argument schema for decoding, with its free strings bounded so that the call can finish within
/// `max_tokens`: the budget, at about 1.5 characters a token, is shared among the string values the call may
/// hold (a list counted at its most items), each given at least 16 and at most `max_tokens / 2` characters.
/// A list of objects the schema leaves unbounded gets at most four items, a list of strings eight. A value
/// the schema leaves free (`{}`, `true`) becomes a bounded scalar, a bounded list of scalars, or an object
/// of bounded scalars. Bounds the schema sets are kept; arguments are still validated against the schema
/// itself.
fn within_budget(schema: &Value, max_tokens: u32) -> Value {
    const OBJECT_ITEMS: u64 = 4;
    const STRING_ITEMS: u64 = 8;
    fn free(schema: &Value) -> bool {
        match schema {
            Value::Bool(true) => true,
            Value::Object(map) => {
                !["type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "not", "properties", "items"]
                    .iter()
                    .any(|k| map.contains_key(*k))
            }
            _ => false,
        }
    }
    fn slots(schema: &Value) -> u64 {
        if free(schema) {
            return 1;
        }
        let Value::Object(map) = schema else { return 0 };
        match map.get("type").and_then(Value::as_str) {
            Some("string") if free_string(map) && !map.contains_key("maxLength") => 1,
            Some("array") => {
                let items = map.get("items").map(slots).unwrap_or(0);
                let most = if items > 1 { OBJECT_ITEMS } else { STRING_ITEMS };
                let n = map.get("maxItems").and_then(Value::as_u64).unwrap_or(most);
                items * n.min(most)
            }
            _ => map.get("properties").and_then(Value::as_object).map(|p| p.values().map(slots).sum()).unwrap_or(0),
        }
    }
    fn bound(schema: &mut Value, per_string: u64) {
        if free(schema) {
            let description = schema.get("description").cloned();
            let scalar = json!([
                { "type": "string", "maxLength": per_string },
                { "type": "number" },
                { "type": "boolean" },
                { "type": "null" },
            ]);
            let mut bounded = json!({ "anyOf": [
                scalar[0], scalar[1], scalar[2], scalar[3],
                { "type": "array", "items": { "anyOf": scalar }, "maxItems": STRING_ITEMS },
                { "type": "object", "additionalProperties": { "anyOf": scalar } },
            ]});
            if let Some(d) = description {
                bounded["description"] = d;
            }
            *schema = bounded;
            return;
        }
        let Value::Object(map) = schema else { return };
        let ty = map.get("type").and_then(Value::as_str).map(str::to_owned);
        match ty.as_deref() {
            Some("string") if free_string(map) && !map.contains_key("maxLength") => {
                let least = map.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                map.insert("maxLength".into(), per_string.max(least).into());
            }
            Some("array") => {
                let item_slots = map.get("items").map(slots).unwrap_or(0);
                if item_slots > 0 && !map.contains_key("maxItems") {
                    let most = if item_slots > 1 { OBJECT_ITEMS } else { STRING_ITEMS };
                    let least = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
                    map.insert("maxItems".into(), most.max(least).into());
                }
                if let Some(items) = map.get_mut("items") {
                    bound(items, per_string);
                }
            }
            _ => {
                if let Some(Value::Object(props)) = map.get_mut("properties") {
                    props.values_mut().for_each(|p| bound(p, per_string));
                }
            }
        }
    }
    let budget = u64::from(max_tokens) * 3 / 2;
    let per_string = (budget / slots(schema).max(1)).clamp(16, u64::from(max_tokens / 2).max(16));
    let mut schema = schema.clone();
    bound(&mut schema, per_string);
    schema
}

/// Whether a schema of type `string` leaves its value free: no allowed values, format or pattern.
pub(super) fn free_string(schema: &Map<String, Value>) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("string")
        && !["enum", "const", "format", "pattern"].iter().any(|k| schema.contains_key(*k))
}

/// What one model turn asked for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Turn {
    /// These calls (at least one).
    Calls(Vec<ToolCall>),
    /// No call (`[]`): the model is to answer.
    NoCall,
    /// The answer.
    Answer(Value),
}

/// Reads a turn written in either format (a model that ignores constraints, or a scripted one, may write
/// the other): `{"answer": ..}`, a call object with `tool` or `name`, or a list of call objects. Identical
/// calls in one turn are kept once.
pub(super) fn parse_turn(value: Value) -> Option<Turn> {
    fn call(value: Value) -> Option<ToolCall> {
        let Value::Object(mut obj) = value else { return None };
        let tool = obj.remove("name").or_else(|| obj.remove("tool"))?.as_str()?.to_owned();
        let arguments = obj.remove("arguments").unwrap_or(Value::Object(Map::new()));
        Some(ToolCall { tool, arguments })
    }
    match value {
        Value::Array(items) => {
            let mut calls: Vec<ToolCall> = Vec::with_capacity(items.len());
            for item in items {
                let c = call(item)?;
                if !calls.contains(&c) {
                    calls.push(c);
                }
            }
            Some(if calls.is_empty() { Turn::NoCall } else { Turn::Calls(calls) })
        }
        Value::Object(mut obj) => {
            if let Some(answer) = obj.remove("answer") {
                return Some(Turn::Answer(answer));
            }
            call(Value::Object(obj)).map(|c| Turn::Calls(vec![c]))
        }
        _ => None,
    }
}

/// Which way a reply that begins with this text goes, if it is already decided.
fn branch(format: ToolFormat, text: &str) -> Option<bool> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match format {
        ToolFormat::Json => {
            let mut chars = text.chars();
            match chars.next()? {
                '{' => Some(false),
                '[' => match chars.next()? {
                    '{' => Some(true),
                    _ => Some(false),
                },
                _ => None,
            }
        }
        ToolFormat::Lines | ToolFormat::Compact => {
            let rest = text.strip_prefix('{')?.strip_prefix('"')?;
            match rest.chars().next()? {
                'a' => Some(false),
                _ => Some(true),
            }
        }
    }
}

/// The probability the model gave to calling a tool (rather than answering) at the point where its reply
/// chose between the two, from the reply's token log-probabilities (which, under a constraint, are over the
/// tokens the constraint allows). `None` without log-probabilities or if the reply never chose.
pub(super) fn call_probability(format: ToolFormat, tokens: &[TokenLogprob]) -> Option<f64> {
    let mut prefix = String::new();
    // The probability of the path taken so far.
    let mut path = 1.0f64;
    let (mut call, mut known) = (0.0f64, 0.0f64);
    for token in tokens {
        let chosen = f64::from(token.logprob).exp();
        for (text, logprob) in &token.top {
            if *text == token.token {
                continue;
            }
            let p = path * f64::from(*logprob).exp();
            match branch(format, &format!("{prefix}{text}")) {
                Some(true) => {
                    call += p;
                    known += p;
                }
                Some(false) => known += p,
                None => {}
            }
        }
        prefix.push_str(&token.token);
        match branch(format, &prefix) {
            Some(decided) => {
                let p = path * chosen;
                known += p;
                if decided {
                    call += p;
                }
                return (known > 0.0).then(|| call / known);
            }
            None => path *= chosen,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(token: &str, p: f32, top: &[(&str, f32)]) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            logprob: p.ln(),
            top: top.iter().map(|(s, p)| ((*s).to_owned(), p.ln())).collect(),
        }
    }

    #[test]
    fn free_strings_share_the_token_budget() {
        let one = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        assert_eq!(within_budget(&one, 256)["properties"]["city"]["maxLength"], 128);
        let beer = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "string"}, "c": {"type": "string"},
            "d": {"type": "string"}, "e": {"type": "string"}, "f": {"type": "string", "enum": ["x"]},
            "g": {"type": "string", "maxLength": 5}}});
        let b = within_budget(&beer, 256);
        assert_eq!(b["properties"]["a"]["maxLength"], 384 / 5);
        assert_eq!(b["properties"]["g"]["maxLength"], 5);
        assert!(b["properties"]["f"].get("maxLength").is_none());
        let query = json!({"type": "object", "properties": {"table": {"type": "string"},
            "conditions": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "value": {"type": "string"}}}}}});
        let q = within_budget(&query, 256);
        assert_eq!(q["properties"]["conditions"]["maxItems"], 4);
        // 1 + 2 × 4 strings share 384 characters.
        assert_eq!(q["properties"]["conditions"]["items"]["properties"]["field"]["maxLength"], 384 / 9);
        let tags = json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}});
        let t = within_budget(&tags, 256);
        assert_eq!(t["properties"]["tags"]["maxItems"], 8);
        assert_eq!(t["properties"]["tags"]["items"]["maxLength"], 384 / 8);
        // A free value becomes a bounded one.
        let any = json!({"type": "object", "properties": {"data": {"description": "anything"}}});
        let a = within_budget(&any, 256);
        assert_eq!(a["properties"]["data"]["anyOf"][0]["maxLength"], 128);
        assert_eq!(a["properties"]["data"]["description"], "anything");
        let validator = jsonschema::validator_for(&a).unwrap();
        assert!(validator.is_valid(&json!({"data": {"rows": 3, "name": "x"}})));
        assert!(validator.is_valid(&json!({"data": ["a", 1]})));
    }

    #[test]
    fn turns_of_either_format_are_read() {
        let call = |v: Value| parse_turn(v);
        assert_eq!(call(json!([])), Some(Turn::NoCall));
        assert_eq!(call(json!({"answer": 3})), Some(Turn::Answer(json!(3))));
        let one = ToolCall { tool: "f".into(), arguments: json!({"x": 1}) };
        assert_eq!(call(json!({"tool": "f", "arguments": {"x": 1}})), Some(Turn::Calls(vec![one.clone()])));
        assert_eq!(
            call(json!([{"name": "f", "arguments": {"x": 1}}, {"name": "f", "arguments": {"x": 1}}])),
            Some(Turn::Calls(vec![one]))
        );
        assert_eq!(call(json!("text")), None);
    }

    #[test]
    fn the_call_probability_is_read_where_the_reply_branches() {
        // "[" then "{": the choice is made on the second token.
        let tokens = [t("[", 0.9, &[("[", 0.9), ("{\"", 0.1)]), t("{\"", 0.6, &[("{\"", 0.6), ("]", 0.4)])];
        let p = call_probability(ToolFormat::Json, &tokens).unwrap();
        // Answer object 0.1; under "[": call 0.54, empty list 0.36.
        assert!((p - 0.54).abs() < 1e-6, "{p}");
        // Decided on the first token.
        let tokens = [t("[]", 0.7, &[("[]", 0.7), ("[{\"", 0.3)])];
        assert!((call_probability(ToolFormat::Json, &tokens).unwrap() - 0.3).abs() < 1e-6);
        let tokens = [t("{\"", 0.8, &[("{\"", 0.8), ("{\"t", 0.2)]), t("tool", 0.9, &[("tool", 0.9), ("answer", 0.1)])];
        let p = call_probability(ToolFormat::Compact, &tokens).unwrap();
        assert!((p - (0.2 + 0.8 * 0.9)).abs() < 1e-6, "{p}");
        assert_eq!(call_probability(ToolFormat::Json, &[]), None);
    }
}
