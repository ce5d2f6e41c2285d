// Only agents (specialists, teams, graphs, your own) and async functions can be nodes.
use slm_agents::graph::Graph;

fn main() {
    let mut g = Graph::builder::<u32>();
    let n = g.input();
    let _x = g.add(42u8).after(&n);
}
