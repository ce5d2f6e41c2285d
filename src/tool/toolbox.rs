//! A set of tools keyed by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{DynTool, Tool, ToolError};
use crate::{Error, Result};

struct Entry {
    tool: Arc<dyn DynTool>,
    parameters: Value,
    validator: jsonschema::Validator,
}

/// Tools keyed by name, with their argument schemas compiled for validation.
///
/// Cloning a `Toolbox` is cheap; tools are shared.
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: BTreeMap<String, Arc<Entry>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.tools.keys()).finish()
    }
}

impl Toolbox {
    /// An empty toolbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a typed tool.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] if a tool of that name is already there, or the name is not made of letters,
    /// digits, `_`, `-` and `.` (dotted names, as MCP servers and BFCL use them, are kept as they are: the model
    /// writes the name inside a JSON string, where a dot is an ordinary character); [`Error::Schema`] if its argument schema is not valid.
    pub fn with<T: Tool>(self, tool: T) -> Result<Self> {
        self.with_dyn(Arc::new(tool))
    }

    /// Adds a tool held as a trait object (for example one made with [`tool_fn`](super::tool_fn)).
    ///
    /// # Errors
    /// As [`with`](Self::with).
    pub fn with_dyn(mut self, tool: Arc<dyn DynTool>) -> Result<Self> {
        let name = tool.name().to_owned();
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(Error::InvalidSetting {
                setting: "tool name",
                reason: format!("`{name}` must be 1 to 128 letters, digits, `_`, `-` or `.`"),
            });
        }
        if self.tools.contains_key(&name) {
            return Err(Error::InvalidSetting {
                setting: "tool name",
                reason: format!("two tools are named `{name}`"),
            });
        }
        let parameters = tool.parameters();
        let validator = jsonschema::validator_for(&parameters)
            .map_err(|e| Error::Schema { type_name: format!("arguments of {name}"), reason: e.to_string() })?;
        self.tools.insert(name, Arc::new(Entry { tool, parameters, validator }));
        Ok(self)
    }

    /// The tools' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The tool of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynTool>> {
        self.tools.get(name).map(|e| &e.tool)
    }

    /// The JSON Schema of a tool's arguments.
    pub fn parameters(&self, name: &str) -> Option<&Value> {
        self.tools.get(name).map(|e| &e.parameters)
    }

    /// Checks arguments against a tool's schema.
    ///
    /// # Errors
    /// [`ToolError::InvalidArguments`] listing what does not match (or naming an unknown tool).
    pub fn validate(&self, name: &str, arguments: &Value) -> Result<(), ToolError> {
        let entry =
            self.tools.get(name).ok_or_else(|| ToolError::InvalidArguments(format!("no tool named `{name}`")))?;
        let errors: Vec<String> = entry.validator.iter_errors(arguments).map(|e| e.to_string()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ToolError::InvalidArguments(errors.join("; ")))
        }
    }

    /// Validates the arguments, then calls the tool.
    ///
    /// # Errors
    /// [`ToolError::InvalidArguments`], or whatever the tool returns.
    pub async fn call(&self, name: &str, arguments: Value) -> Result<Value, ToolError> {
        self.validate(name, &arguments)?;
        let entry =
            self.tools.get(name).ok_or_else(|| ToolError::InvalidArguments(format!("no tool named `{name}`")))?;
        entry.tool.call_json(arguments).await
    }
}
