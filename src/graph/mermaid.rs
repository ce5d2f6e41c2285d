//! A graph drawn as a Mermaid flowchart.

use super::{Graph, Kind};

impl<I, O> Graph<I, O> {
    /// The graph as a Mermaid flowchart, to paste into Markdown.
    pub fn to_mermaid(&self) -> String {
        let nodes = &self.inner.nodes;
        let mut out = String::from("flowchart TD\n");
        for (i, n) in nodes.iter().enumerate() {
            let label = n.name.replace('"', "'");
            let shape = match n.kind {
                Kind::Input => format!("n{i}([\"{label}\"])"),
                Kind::Branch(_) => format!("n{i}{{\"{label}\"}}"),
                Kind::Merge => format!("n{i}((\"{label}\"))"),
                Kind::Task(_) if i == self.inner.output => format!("n{i}[[\"{label}\"]]"),
                Kind::Task(_) => format!("n{i}[\"{label}\"]"),
            };
            out.push_str(&format!("    {shape}\n"));
        }
        for (i, n) in nodes.iter().enumerate() {
            let mut seen = Vec::new();
            for &d in &n.deps {
                if seen.contains(&d) {
                    continue;
                }
                seen.push(d);
                match &n.condition {
                    Some(c) if c.branch == d => {
                        out.push_str(&format!("    n{d} -. {} .-> n{i}\n", c.label.replace('"', "'")))
                    }
                    _ => out.push_str(&format!("    n{d} --> n{i}\n")),
                }
            }
        }
        out
    }
}
