//! Whether a request is about any of a specialist's tools: the share of its content words found in a tool's
//! name, description or arguments.

use serde_json::Value;

use crate::tool::Toolbox;

/// Words too common to say what a request is about (English function words and the verbs every tool
/// description uses).
const COMMON: &[&str] = &[
    "a",
    "about",
    "all",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "by",
    "can",
    "calculate",
    "compute",
    "could",
    "do",
    "does",
    "find",
    "for",
    "from",
    "get",
    "given",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "like",
    "me",
    "my",
    "need",
    "of",
    "on",
    "or",
    "please",
    "should",
    "some",
    "that",
    "the",
    "their",
    "there",
    "this",
    "to",
    "using",
    "want",
    "what",
    "which",
    "will",
    "with",
    "would",
    "you",
];

/// The stems of the content words of a text: split at anything not a letter or digit and at lower-to-upper
/// case changes (`getWeather`), lowercased, common words and bare numbers dropped, a plural or `-ing` ending
/// removed, cut to six characters.
pub(super) fn stems(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut lower_before = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && lower_before {
                words.push(std::mem::take(&mut current));
            }
            lower_before = c.is_lowercase();
            current.extend(c.to_lowercase());
        } else {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            lower_before = false;
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
        .into_iter()
        .filter(|w| w.chars().count() > 1 && !COMMON.contains(&w.as_str()) && !w.chars().all(|c| c.is_ascii_digit()))
        .map(|w| {
            let w = w.trim_end_matches("ing").trim_end_matches("es").trim_end_matches('s');
            w.chars().take(6).collect()
        })
        .filter(|w: &String| !w.is_empty())
        .collect()
}

/// The words a tool is known by: its name, its description, and its arguments' names, descriptions and
/// allowed values.
pub(super) fn tool_stems(tools: &Toolbox) -> Vec<Vec<String>> {
    tools
        .names()
        .map(|name| {
            let mut text = String::from(name);
            if let Some(tool) = tools.get(name) {
                text.push(' ');
                text.push_str(&tool.description());
            }
            if let Some(parameters) = tools.parameters(name) {
                schema_words(parameters, &mut text);
            }
            let mut stems = stems(&text);
            stems.sort();
            stems.dedup();
            stems
        })
        .collect()
}

fn schema_words(schema: &Value, out: &mut String) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match key.as_str() {
                    "properties" => {
                        if let Value::Object(props) = value {
                            for (name, p) in props {
                                out.push(' ');
                                out.push_str(name);
                                schema_words(p, out);
                            }
                        }
                    }
                    "description" | "title" => {
                        if let Value::String(s) = value {
                            out.push(' ');
                            out.push_str(s);
                        }
                    }
                    "enum" | "const" | "default" | "examples" => strings(value, out),
                    _ => schema_words(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| schema_words(v, out)),
        _ => {}
    }
}

fn strings(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push(' ');
            out.push_str(s);
        }
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The share (0 to 1) of the request's content words that the best-matching tool is known by; 1 for a
/// request without content words (nothing to go by).
pub(super) fn relevance(request: &str, tools: &[Vec<String>]) -> f64 {
    let words = stems(request);
    if words.is_empty() {
        return 1.0;
    }
    let best = tools.iter().map(|known| words.iter().filter(|w| known.binary_search(w).is_ok()).count()).max();
    best.unwrap_or(0) as f64 / words.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_words_are_stemmed_and_common_words_dropped() {
        assert_eq!(stems("What's the weather in Paris?"), ["weathe", "pari"]);
        assert_eq!(stems("getCurrentWeather"), ["curren", "weathe"]);
        assert_eq!(stems("Find flights for 2 people"), ["flight", "people"]);
    }

    #[test]
    fn a_request_about_a_tool_is_relevant_and_one_about_nothing_it_does_is_not() {
        let known = vec![{
            let mut s = stems("search_flights Finds flights between two cities origin destination date");
            s.sort();
            s.dedup();
            s
        }];
        assert!(relevance("Flights from Paris to Rome, any date", &known) >= 0.5);
        assert_eq!(relevance("What is the capital of France?", &known), 0.0);
        assert_eq!(relevance("?!", &known), 1.0, "nothing to go by");
    }
}
