//! Schemas for decoding and for validation.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::{Completion, Constraint, FinishReason};
use crate::{Error, Result};

/// Longest string the grammar allows where the schema sets no `maxLength`.
pub const DEFAULT_MAX_STRING: u64 = 256;
/// Most array items the grammar allows where the schema sets no `maxItems`.
pub const DEFAULT_MAX_ITEMS: u64 = 32;
/// Largest magnitude the grammar allows for an integer or number without bounds.
pub const DEFAULT_NUMBER_BOUND: i64 = 1_000_000_000_000_000;

/// The JSON Schema of a Rust type, in the two forms typed generation needs.
///
/// - The *validation* schema is what schemars derives: the output is checked against it.
/// - The *decoding* schema is a tightened copy the grammar is built from. A small model given an unbounded
///   string, number or array can loop until the token limit ("Dana", "Jordan", ... or endless digits), so every
///   string gets a `maxLength` ([`DEFAULT_MAX_STRING`] unless the type sets one), every array a `maxItems`
///   ([`DEFAULT_MAX_ITEMS`]), every integer and number bounds (from its integer format, or
///   ±[`DEFAULT_NUMBER_BOUND`]), and every object `additionalProperties: false`. Set tighter bounds on your
///   type with schemars attributes (`#[schemars(length(max = 40))]`, `#[schemars(range(min = 1, max = 480))]`).
#[derive(Clone)]
pub struct OutputSchema {
    type_name: String,
    validation: Value,
    /// `validation`, compiled once: every parse of every run validates against it.
    validator: std::sync::Arc<jsonschema::Validator>,
    decoding: Value,
}

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSchema")
            .field("type_name", &self.type_name)
            .field("validation", &self.validation)
            .field("decoding", &self.decoding)
            .finish_non_exhaustive()
    }
}

impl OutputSchema {
    /// Derives the schemas of `T`.
    ///
    /// # Errors
    /// [`Error::Schema`] if the derived schema is not a valid JSON Schema.
    pub fn of<T: JsonSchema>() -> Result<Self> {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
        Self::from_value(short_type_name::<T>(), schema.to_value())
    }

    /// Uses a hand-written JSON Schema, named `type_name` in errors.
    ///
    /// # Errors
    /// [`Error::Schema`] if it is not a valid JSON Schema.
    pub fn from_value(type_name: impl Into<String>, schema: Value) -> Result<Self> {
        let type_name = type_name.into();
        jsonschema::meta::validate(&schema)
            .map_err(|e| Error::Schema { type_name: type_name.clone(), reason: e.to_string() })?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| Error::Schema { type_name: type_name.clone(), reason: e.to_string() })?;
        let mut decoding = schema.clone();
        tighten(&mut decoding, &Bounds::DEFAULT);
        Ok(Self { type_name, validation: schema, validator: std::sync::Arc::new(validator), decoding })
    }

    /// The same schema, with the default bounds of the decoding schema lowered so that an output can finish
    /// within `max_tokens` tokens: a string the type leaves unbounded gets at most `max_tokens / 2`
    /// characters (at least 16, at most [`DEFAULT_MAX_STRING`]), an array at most `max_tokens / 16` items
    /// (at least 2, at most [`DEFAULT_MAX_ITEMS`]). Bounds the type sets itself are kept.
    pub fn within_tokens(mut self, max_tokens: u32) -> Self {
        let bounds = Bounds {
            max_string: (u64::from(max_tokens) / 2).clamp(16, DEFAULT_MAX_STRING),
            max_items: (u64::from(max_tokens) / 16).clamp(2, DEFAULT_MAX_ITEMS),
        };
        let mut decoding = self.validation.clone();
        tighten(&mut decoding, &bounds);
        self.decoding = decoding;
        self
    }

    /// The type's name as used in errors.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The schema output is validated against.
    pub fn validation_schema(&self) -> &Value {
        &self.validation
    }

    /// The tightened schema the decoding grammar is built from.
    pub fn decoding_schema(&self) -> &Value {
        &self.decoding
    }

    /// The decoding constraint.
    pub fn constraint(&self) -> Constraint {
        Constraint::JsonSchema(self.decoding.clone())
    }

    /// Validates a completion's text and deserializes it.
    ///
    /// # Errors
    /// [`Error::Incomplete`] when generation was cut off, [`Error::Validation`], [`Error::Deserialize`].
    pub fn parse<T: DeserializeOwned>(&self, completion: &Completion) -> Result<T> {
        let text = completion.text.trim();
        let instance = self.json(completion)?;
        self.validate(&instance, text)?;
        serde_json::from_value(instance).map_err(|source| Error::Deserialize {
            type_name: self.type_name.clone(),
            output: text.to_owned(),
            source,
        })
    }

    /// Parses a completion's text as JSON, without validating it.
    pub(crate) fn json(&self, completion: &Completion) -> Result<Value> {
        let text = completion.text.trim();
        let cut_off = matches!(completion.finish_reason, FinishReason::MaxTokens | FinishReason::ContextFull);
        serde_json::from_str(text).map_err(|source| {
            if cut_off {
                Error::Incomplete {
                    type_name: self.type_name.clone(),
                    completion_tokens: completion.usage.completion_tokens,
                    output: completion.text.clone(),
                }
            } else {
                Error::Deserialize { type_name: self.type_name.clone(), output: text.to_owned(), source }
            }
        })
    }

    /// Whether a value validates against the validation schema.
    pub(crate) fn validation_schema_accepts(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    fn validate(&self, instance: &Value, text: &str) -> Result<()> {
        let errors: Vec<String> = self.validator.iter_errors(instance).map(|e| e.to_string()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation {
                type_name: self.type_name.clone(),
                reason: errors.join("; "),
                output: text.to_owned(),
            })
        }
    }
}

/// The JSON Schema of `T` with every subschema inlined (no `$defs`), ready to be nested in a larger schema
/// such as a tool-call grammar. Recursive types keep their `$ref`s and cannot be nested.
pub fn inline_schema_for<T: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    let mut value = settings.into_generator().into_root_schema_for::<T>().to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("$schema");
    }
    value
}

pub(crate) fn short_type_name<T>() -> String {
    // `alloc::vec::Vec<my_crate::Meeting>` -> `Vec<Meeting>`
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
    out
}

fn has_type(obj: &Map<String, Value>, ty: &str) -> bool {
    match obj.get("type") {
        Some(Value::String(t)) => t == ty,
        Some(Value::Array(ts)) => ts.iter().any(|t| t == ty),
        _ => false,
    }
}

/// Integer bounds implied by a schemars `format`.
fn format_bounds(format: Option<&str>) -> (i64, i64) {
    let b = DEFAULT_NUMBER_BOUND;
    match format {
        Some("int8") => (i64::from(i8::MIN), i64::from(i8::MAX)),
        Some("uint8") => (0, i64::from(u8::MAX)),
        Some("int16") => (i64::from(i16::MIN), i64::from(i16::MAX)),
        Some("uint16") => (0, i64::from(u16::MAX)),
        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
        Some("uint32") => (0, i64::from(u32::MAX)),
        Some("uint64" | "uint" | "uint128") => (0, b),
        _ => (-b, b),
    }
}

/// The bounds the decoding schema adds where the type sets none.
struct Bounds {
    max_string: u64,
    max_items: u64,
}

impl Bounds {
    const DEFAULT: Bounds = Bounds { max_string: DEFAULT_MAX_STRING, max_items: DEFAULT_MAX_ITEMS };
}

fn tighten(value: &mut Value, bounds: &Bounds) {
    match value {
        Value::Object(obj) => {
            tighten_object(obj, bounds);
            for v in obj.values_mut() {
                tighten(v, bounds);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| tighten(v, bounds)),
        _ => {}
    }
}

fn tighten_object(obj: &mut Map<String, Value>, bounds: &Bounds) {
    let fixed = obj.contains_key("enum") || obj.contains_key("const");
    if has_type(obj, "string") && !fixed && !obj.contains_key("maxLength") && !obj.contains_key("format") {
        let least = obj.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        obj.insert("maxLength".into(), bounds.max_string.max(least).into());
    }
    if has_type(obj, "integer") && !fixed {
        let (lo, hi) = format_bounds(obj.get("format").and_then(Value::as_str));
        if !obj.contains_key("minimum") && !obj.contains_key("exclusiveMinimum") {
            obj.insert("minimum".into(), lo.into());
        }
        if !obj.contains_key("maximum") && !obj.contains_key("exclusiveMaximum") {
            obj.insert("maximum".into(), hi.into());
        }
        obj.remove("format");
    } else if has_type(obj, "number") && !fixed {
        if !obj.contains_key("minimum") && !obj.contains_key("exclusiveMinimum") {
            obj.insert("minimum".into(), (-DEFAULT_NUMBER_BOUND).into());
        }
        if !obj.contains_key("maximum") && !obj.contains_key("exclusiveMaximum") {
            obj.insert("maximum".into(), DEFAULT_NUMBER_BOUND.into());
        }
        obj.remove("format");
    }
    if has_type(obj, "array") && !obj.contains_key("maxItems") {
        let least = obj.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        obj.insert("maxItems".into(), bounds.max_items.max(least).into());
    }
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Meeting {
        title: String,
        minutes: u32,
        people: Vec<String>,
        #[schemars(length(max = 10))]
        room: Option<String>,
    }

    #[test]
    fn decoding_schema_bounds_strings_numbers_and_arrays() {
        let s = OutputSchema::of::<Meeting>().unwrap();
        let d = s.decoding_schema();
        assert_eq!(d["properties"]["title"]["maxLength"], DEFAULT_MAX_STRING);
        assert_eq!(d["properties"]["minutes"]["maximum"], u64::from(u32::MAX));
        assert_eq!(d["properties"]["people"]["maxItems"], DEFAULT_MAX_ITEMS);
        assert_eq!(d["properties"]["people"]["items"]["maxLength"], DEFAULT_MAX_STRING);
        assert_eq!(d["additionalProperties"], false);
        // The type's own bound is kept.
        assert_eq!(d["properties"]["room"]["maxLength"], 10);
        // Validation uses the schema as derived.
        assert!(s.validation_schema()["properties"]["title"].get("maxLength").is_none());
    }

    #[test]
    fn type_names_are_short() {
        assert_eq!(short_type_name::<Vec<Meeting>>(), "Vec<Meeting>");
    }
}
