// A node that takes a String cannot be placed after a handle of a u32.
use slm_agents::graph::Graph;

fn main() {
    let mut g = Graph::builder::<u32>();
    let n = g.input();
    let _upper = g.add(|s: String| async move { Ok::<_, slm_agents::Error>(s.to_uppercase()) }).after(&n);
}
