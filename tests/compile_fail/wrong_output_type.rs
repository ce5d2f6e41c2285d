// The graph's output type is the output handle's type.
use slm_agents::graph::Graph;

fn main() {
    let mut g = Graph::builder::<u32>();
    let n = g.input();
    let doubled = g.add(|n: u32| async move { Ok::<_, slm_agents::Error>(n * 2) }).after(&n);
    let _graph: Graph<u32, String> = g.output(doubled).build().unwrap();
}
