//! S5: training files, per cluster, in the OpenAI chat fine-tuning format.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Clustering, Curated, CuratedCall};
use crate::model::Role;
use crate::tool::ToolCall;
use crate::{Error, Result};

/// The tool calls written in an assistant message, in the formats models and this crate's specialists use:
/// `{"tool": .., "arguments": ..}`, `{"name": .., "arguments": ..}`, a list of those, or an object with a
/// `tool_calls` or `calls` list. Empty for anything else (an answer in words).
pub fn parse_calls(text: &str) -> Vec<ToolCall> {
    let Ok(value) = serde_json::from_str::<Value>(text.trim()) else { return Vec::new() };
    calls_in(&value)
}

/// The tool calls in a JSON value, in the formats [`parse_calls`] reads (an OpenAI assistant message among
/// them: its `tool_calls`, arguments as a JSON string).
pub(crate) fn calls_in(value: &Value) -> Vec<ToolCall> {
    match value {
        Value::Array(items) => items.iter().flat_map(calls_in).collect(),
        Value::Object(map) => {
            if let Some(list @ Value::Array(_)) = map.get("tool_calls").or_else(|| map.get("calls")) {
                return calls_in(list);
            }
            if let Some(f @ Value::Object(_)) = map.get("function") {
                return calls_in(f);
            }
            let name = map.get("tool").or_else(|| map.get("name")).and_then(Value::as_str);
            match (name, map.get("arguments")) {
                (Some(name), Some(arguments)) => {
                    // OpenAI writes arguments as a JSON string.
                    let arguments = match arguments {
                        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| arguments.clone()),
                        other => other.clone(),
                    };
                    vec![ToolCall { tool: name.to_owned(), arguments }]
                }
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// The tool a call is about: the one it called, or else the one whose result it answered from (the last call
/// written by the assistant in its messages); `None` for a call that answers in words with no tool involved.
pub fn task_tool(call: &CuratedCall) -> Option<String> {
    if let Some(c) = call.tool_calls.first() {
        return Some(c.tool.clone());
    }
    if !call.messages.iter().any(|m| m.role == Role::Tool) {
        return None;
    }
    call.messages
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .find_map(|m| parse_calls(&m.content).into_iter().next())
        .map(|c| c.tool)
}

/// The answer text of an output: the `answer` of this crate's specialists' `{"answer": ..}` (a string as it
/// is, anything else as JSON), else the output as it is.
pub fn answer_text(output: &str) -> String {
    match serde_json::from_str::<Value>(output.trim()) {
        Ok(Value::Object(map)) if map.len() == 1 && map.contains_key("answer") => match &map["answer"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        _ => output.to_owned(),
    }
}

/// One curated call as a line of an OpenAI chat fine-tuning file: `{"messages": [..], "tools": [..]}`, the
/// assistant's earlier calls and the final one written as `tool_calls` (arguments as JSON strings, as OpenAI
/// writes them), tool results as `tool` messages answering them by id. TRL, Unsloth and hosted trainers load
/// these as they are.
pub fn chat_example(call: &CuratedCall) -> Value {
    let mut messages = Vec::new();
    let mut next_id = 0usize;
    let mut open: Vec<String> = Vec::new();
    for m in &call.messages {
        match m.role {
            Role::Assistant => {
                let calls = parse_calls(&m.content);
                if calls.is_empty() {
                    messages.push(json!({"role": "assistant", "content": answer_text(&m.content)}));
                } else {
                    let (message, ids) = assistant_calls(&calls, &mut next_id);
                    open = ids;
                    messages.push(message);
                }
            }
            Role::Tool => {
                let id = if open.is_empty() { format!("call_{}", next_id.saturating_sub(1)) } else { open.remove(0) };
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": m.content}));
            }
            role => messages.push(json!({"role": role.as_str(), "content": m.content})),
        }
    }
    if call.tool_calls.is_empty() {
        messages.push(json!({"role": "assistant", "content": answer_text(&call.output)}));
    } else {
        messages.push(assistant_calls(&call.tool_calls, &mut next_id).0);
    }
    let tools: Vec<Value> = call
        .tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
        .collect();
    if tools.is_empty() {
        json!({ "messages": messages })
    } else {
        json!({ "messages": messages, "tools": tools })
    }
}

fn assistant_calls(calls: &[ToolCall], next_id: &mut usize) -> (Value, Vec<String>) {
    let mut ids = Vec::new();
    let list: Vec<Value> = calls
        .iter()
        .map(|c| {
            let id = format!("call_{next_id}");
            *next_id += 1;
            ids.push(id.clone());
            json!({"id": id, "type": "function", "function": {"name": c.tool, "arguments": c.arguments.to_string()}})
        })
        .collect();
    (json!({"role": "assistant", "tool_calls": list}), ids)
}

/// Whether a call belongs to the held-out (test) part: decided by its run, so that the turns of one request
/// are never split between training and test. `share` is the held-out share, from 0 to 1.
pub fn is_held_out(call: &CuratedCall, share: f64) -> bool {
    let bucket = super::cluster::hash(&call.run) % 10_000;
    (bucket as f64) < share.clamp(0.0, 1.0) * 10_000.0
}

/// What [`export`] wrote for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedCluster {
    /// The cluster.
    pub cluster: usize,
    /// Its training file.
    pub train: PathBuf,
    /// Its test file.
    pub test: PathBuf,
    /// Lines in the training file.
    pub train_examples: usize,
    /// Lines in the test file.
    pub test_examples: usize,
}

/// Step S5 of the conversion loop: writes `dir/cluster-K/train.jsonl` and `test.jsonl` for every cluster,
/// one [`chat_example`] per curated call (already scrubbed of personal data), held out by
/// [`is_held_out`] with `held_out` as the test share.
///
/// # Errors
/// [`Error::Export`] when a directory or file cannot be written.
pub fn export(
    curated: &Curated,
    clustering: &Clustering,
    dir: impl AsRef<Path>,
    held_out: f64,
) -> Result<Vec<ExportedCluster>> {
    let dir = dir.as_ref();
    let mut out = Vec::new();
    for cluster in &clustering.clusters {
        let folder = dir.join(format!("cluster-{}", cluster.id));
        fs::create_dir_all(&folder).map_err(|source| Error::Export { path: folder.clone(), source })?;
        let (train_path, test_path) = (folder.join("train.jsonl"), folder.join("test.jsonl"));
        let mut train = Vec::new();
        let mut test = Vec::new();
        let (mut n_train, mut n_test) = (0, 0);
        for call in clustering.calls_of(curated, cluster.id) {
            let line = chat_example(call).to_string();
            let (file, n) =
                if is_held_out(call, held_out) { (&mut test, &mut n_test) } else { (&mut train, &mut n_train) };
            let _ = writeln!(file, "{line}");
            *n += 1;
        }
        fs::write(&train_path, train).map_err(|source| Error::Export { path: train_path.clone(), source })?;
        fs::write(&test_path, test).map_err(|source| Error::Export { path: test_path.clone(), source })?;
        out.push(ExportedCluster {
            cluster: cluster.id,
            train: train_path,
            test: test_path,
            train_examples: n_train,
            test_examples: n_test,
        });
    }
    tracing::info!(clusters = out.len(), dir = %dir.display(), "exported training files");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    fn call(messages: Vec<Message>, output: &str, tool_calls: Vec<ToolCall>) -> CuratedCall {
        CuratedCall {
            run: "r".into(),
            seq: 0,
            id: 0,
            caller: "a".into(),
            model: "m".into(),
            escalated: true,
            messages,
            output: output.into(),
            tool_calls,
            tools: Vec::new(),
            constraint: None,
            usage: None,
            latency_ms: 0.0,
            redacted: 0,
        }
    }

    #[test]
    fn calls_are_read_in_every_format() {
        for text in [
            r#"{"tool": "f", "arguments": {"x": 1}}"#,
            r#"{"name": "f", "arguments": {"x": 1}}"#,
            r#"[{"name": "f", "arguments": {"x": 1}}]"#,
            r#"{"tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}"#,
        ] {
            assert_eq!(parse_calls(text), [ToolCall { tool: "f".into(), arguments: json!({"x": 1}) }], "{text}");
        }
        assert!(parse_calls(r#"{"answer": "hi"}"#).is_empty());
        assert!(parse_calls("plain words").is_empty());
    }

    #[test]
    fn a_conversation_becomes_a_chat_example_with_linked_tool_calls() {
        let c = call(
            vec![
                Message::system("sys"),
                Message::user("weather in Oslo?"),
                Message::assistant(r#"{"tool": "weather", "arguments": {"city": "Oslo"}}"#),
                Message::tool(r#"{"temp": 3}"#),
            ],
            r#"{"answer": "3 degrees"}"#,
            Vec::new(),
        );
        assert_eq!(task_tool(&c).as_deref(), Some("weather"));
        let v = chat_example(&c);
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Oslo"}"#);
        assert_eq!(m[3]["tool_call_id"], m[2]["tool_calls"][0]["id"]);
        assert_eq!(m[4], json!({"role": "assistant", "content": "3 degrees"}));
        assert!(v.get("tools").is_none());

        let words = call(vec![Message::user("hi")], "hello there", Vec::new());
        assert_eq!(task_tool(&words), None);
        assert_eq!(chat_example(&words)["messages"][1]["content"], "hello there");
    }

    #[test]
    fn the_held_out_share_is_decided_by_run() {
        let mut c = call(vec![Message::user("x")], "y", Vec::new());
        let held = (0..1000)
            .filter(|i| {
                c.run = format!("run-{i}");
                is_held_out(&c, 0.2)
            })
            .count();
        assert!((150..250).contains(&held), "{held}");
        assert!(!is_held_out(&c, 0.0));
        assert!(is_held_out(&c, 1.0));
    }
}
