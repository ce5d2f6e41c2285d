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

/// Per tool, the share (0 to 1) of the request's content words that it is known by; all 1 for a request
/// without content words (nothing to go by).
pub(super) fn scores(request: &str, tools: &[Vec<String>]) -> Vec<f64> {
    let words = stems(request);
    if words.is_empty() {
        return vec![1.0; tools.len()];
    }
    tools
        .iter()
        .map(|known| words.iter().filter(|w| known.binary_search(w).is_ok()).count() as f64 / words.len() as f64)
        .collect()
}

/// The share of the request's content words that the best-matching tool is known by.
#[cfg(test)]
fn relevance(request: &str, tools: &[Vec<String>]) -> f64 {
    scores(request, tools).into_iter().fold(0.0, f64::max)
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
        let both = vec![known[0].clone(), {
            let mut s = stems("book_hotel Books a hotel room in a city");
            s.sort();
            s
        }];
        assert_eq!(scores("A hotel room in Rome", &both), [0.0, 2.0 / 3.0]);
    }
}

/// Numbers a text states: in digits (`200,000`, `-9.81`, `1e-9`, `3%` also as `0.03`) or as common words
/// (`five`, `dozen`, `half`, `million`).
pub(super) fn numbers_in(text: &str) -> Vec<f64> {
    const WORDS: &[(&str, f64)] = &[
        ("zero", 0.0),
        ("one", 1.0),
        ("two", 2.0),
        ("three", 3.0),
        ("four", 4.0),
        ("five", 5.0),
        ("six", 6.0),
        ("seven", 7.0),
        ("eight", 8.0),
        ("nine", 9.0),
        ("ten", 10.0),
        ("eleven", 11.0),
        ("twelve", 12.0),
        ("twenty", 20.0),
        ("thirty", 30.0),
        ("fifty", 50.0),
        ("hundred", 100.0),
        ("thousand", 1e3),
        ("million", 1e6),
        ("billion", 1e9),
        ("half", 0.5),
        ("twice", 2.0),
        ("double", 2.0),
        ("triple", 3.0),
        ("dozen", 12.0),
        ("quarter", 0.25),
        ("single", 1.0),
        ("pair", 2.0),
        ("decade", 10.0),
        ("century", 100.0),
    ];
    let mut out = Vec::new();
    let mut push = |v: f64| {
        if v.is_finite() {
            out.extend([v, v.abs(), v / 100.0]);
        }
    };
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (matches!(chars[i], '-' | '.') && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < chars.len()
            && (chars[i].is_ascii_digit()
                || matches!(chars[i], '.' | ',' | '_')
                || (matches!(chars[i], 'e' | 'E') && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit() || *c == '-')))
        {
            i += 1;
            if matches!(chars[i - 1], 'e' | 'E') && chars.get(i) == Some(&'-') {
                i += 1;
            }
        }
        let run: String = chars[start..i].iter().collect();
        let run = run.trim_end_matches(['.', ',']);
        if let Ok(v) = run.replace([',', '_'], "").parse::<f64>() {
            push(v);
        }
        for part in run.split(',') {
            if let Ok(v) = part.parse::<f64>() {
                push(v);
            }
        }
    }
    let lower = text.to_lowercase();
    for word in lower.split(|c: char| !c.is_alphanumeric()) {
        let word = word.strip_suffix('s').filter(|w| WORDS.iter().any(|(n, _)| n == w)).unwrap_or(word);
        if let Some((_, v)) = WORDS.iter().find(|(n, _)| *n == word) {
            push(*v);
        }
    }
    out
}

/// The numbers a tool states in its description and schema (defaults, allowed values, bounds, and numbers
/// written in descriptions).
pub(super) fn tool_numbers(description: &str, schema: &Value) -> Vec<f64> {
    fn walk(value: &Value, out: &mut Vec<f64>) {
        match value {
            Value::Number(n) => out.extend(n.as_f64()),
            Value::String(s) => out.extend(numbers_in(s)),
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            Value::Bool(_) | Value::Null => {}
        }
    }
    let mut out = numbers_in(description);
    walk(schema, &mut out);
    out
}

/// The first number in a call's arguments that neither the request nor the tool states, to within 1% (0 and
/// 1 are taken as stated): a value the model made up, as small models do when a request lacks what a tool
/// needs.
pub(super) fn made_up_number(arguments: &Value, stated: &[f64]) -> Option<f64> {
    match arguments {
        Value::Number(n) => {
            let v = n.as_f64()?;
            // Within 1%: a stated value rounded (8.85e-12 for 8.854e-12) is still the stated value.
            let known = v == 0.0 || v == 1.0 || stated.iter().any(|s| (s - v).abs() <= 0.01 * v.abs());
            (!known).then_some(v)
        }
        Value::Array(items) => items.iter().find_map(|v| made_up_number(v, stated)),
        Value::Object(map) => map.values().find_map(|v| made_up_number(v, stated)),
        _ => None,
    }
}

#[cfg(test)]
mod number_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_read_in_digits_and_words() {
        let n = numbers_in("A property costing $200,000 at 3% for five years, -9.81 m/s^2, 1e-9 C, sizes 1,2,3.");
        for v in [200_000.0, 3.0, 0.03, 5.0, -9.81, 9.81, 1e-9, 2.0] {
            assert!(n.iter().any(|x| (x - v).abs() < 1e-12), "{v} in {n:?}");
        }
    }

    #[test]
    fn a_number_the_request_never_gave_is_found() {
        let stated = numbers_in("Area of a triangle with base 10 and height 5");
        assert_eq!(made_up_number(&json!({"base": 10, "height": 5.0, "unit": "m"}), &stated), None);
        assert_eq!(made_up_number(&json!({"weight": 70, "height": 5}), &stated), Some(70.0));
        assert_eq!(made_up_number(&json!({"points": [[0, 1], [10, 5]]}), &stated), None);
        let tool = tool_numbers("Gravity defaults to 9.81.", &json!({"properties": {"g": {"default": -9.81}}}));
        assert_eq!(made_up_number(&json!({"g": 9.81}), &tool), None);
        let tool = tool_numbers("Permittivity, default 8.854e-12.", &json!({}));
        assert_eq!(made_up_number(&json!({"e": 8.85e-12}), &tool), None, "rounded");
        assert_eq!(made_up_number(&json!({"e": 8.5e-12}), &tool), Some(8.5e-12));
    }
}

/// The spans of a request a string argument may take under
/// [`ground_strings`](super::ModelSpecialistBuilder::ground_strings): every run of up to eight words, with
/// the punctuation around it trimmed (at most 600 spans, shortest runs first).
pub(super) fn request_spans(text: &str) -> Vec<String> {
    const TRIM: &[char] = &['.', ',', ';', ':', '!', '?', '"', '\'', '(', ')', '[', ']', '{', '}', '`', '*'];
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut spans: Vec<String> = Vec::new();
    for n in 1..=8 {
        for window in words.windows(n) {
            let span = window.join(" ");
            let span = span.trim_matches(TRIM);
            if !span.is_empty() && !spans.iter().any(|s| s == span) {
                spans.push(span.to_owned());
            }
            if spans.len() >= 600 {
                return spans;
            }
        }
    }
    spans
}

/// A copy of an argument schema where every free string (no `enum`, `const`, `format` or `pattern`) must be
/// one of `spans`.
pub(super) fn spans_only(schema: &Value, spans: &[String]) -> Value {
    let mut schema = schema.clone();
    restrict(&mut schema, spans);
    schema
}

fn restrict(schema: &mut Value, spans: &[String]) {
    let Value::Object(map) = schema else { return };
    let free_string = super::format::free_string(map);
    if free_string && !spans.is_empty() {
        map.insert("enum".into(), Value::Array(spans.iter().cloned().map(Value::String).collect()));
        map.remove("maxLength");
        map.remove("minLength");
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = value {
                    props.values_mut().for_each(|p| restrict(p, spans));
                }
            }
            "items" | "additionalProperties" => restrict(value, spans),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(items) = value {
                    items.iter_mut().for_each(|p| restrict(p, spans));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_of_the_request_become_the_only_strings() {
        let spans = request_spans("Weather in Berkeley, CA tomorrow?");
        for s in ["Weather", "Berkeley", "CA", "Berkeley, CA", "tomorrow", "in Berkeley, CA tomorrow"] {
            assert!(spans.iter().any(|x| x == s), "{s} in {spans:?}");
        }
        let schema = json!({"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "tags": {"type": "array", "items": {"type": "string"}}}});
        let only = spans_only(&schema, &spans);
        assert_eq!(only["properties"]["city"]["enum"].as_array().unwrap().len(), spans.len());
        assert_eq!(only["properties"]["unit"]["enum"], json!(["c", "f"]));
        assert!(only["properties"]["tags"]["items"]["enum"].is_array());
    }
}
