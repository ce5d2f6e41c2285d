// Fan-in gives the node a tuple in the order of the handles: (u32, String), not (String, u32).
use slm_agents::graph::Graph;

fn main() {
    let mut g = Graph::builder::<u32>();
    let n = g.input();
    let text = g.add(|n: u32| async move { Ok::<_, slm_agents::Error>(n.to_string()) }).after(&n);
    let _both = g
        .add(|(s, n): (String, u32)| async move { Ok::<_, slm_agents::Error>(format!("{s}{n}")) })
        .after((&n, &text));
}
