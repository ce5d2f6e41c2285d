// A node can only be added after handles that already exist, so a cycle cannot be written.
use slm_agents::graph::Graph;

fn main() {
    let mut g = Graph::builder::<u32>();
    let a = g.add(|n: u32| async move { Ok::<_, slm_agents::Error>(n + 1) }).after(&b);
    let b = g.add(|n: u32| async move { Ok::<_, slm_agents::Error>(n + 1) }).after(&a);
}
