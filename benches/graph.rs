//! Per-node overhead of the graph executor: a 100-node no-op DAG against the same work written by hand.
//!
//! `cargo bench --bench graph`. The DAG is 10 layers of 10 nodes; each node adds its inputs. The hand-written
//! baseline runs the same 100 async calls with `futures::join_all` layer by layer.

use criterion::{criterion_group, criterion_main, Criterion};
use slm_agents::graph::{Graph, Handle};
use slm_agents::run::RunContext;

const WIDTH: usize = 10;
const DEPTH: usize = 10;

async fn add(x: u64, y: u64) -> Result<u64, slm_agents::Error> {
    Ok(x.wrapping_add(y))
}

fn dag() -> Graph<u64, u64> {
    let mut g = Graph::builder::<u64>();
    let input = g.input();
    let mut layer: Vec<Handle<u64>> = (0..WIDTH).map(|_| input).collect();
    for _ in 0..DEPTH {
        let prev = layer.clone();
        layer = (0..WIDTH)
            .map(|i| {
                let (a, b) = (&prev[i], &prev[(i + 1) % WIDTH]);
                g.add(|(x, y): (u64, u64)| add(x, y)).after((a, b))
            })
            .collect();
    }
    let last = layer[0];
    g.output(last).build().expect("build")
}

async fn by_hand(input: u64) -> u64 {
    let mut layer = vec![input; WIDTH];
    for _ in 0..DEPTH {
        let next = futures::future::join_all((0..WIDTH).map(|i| add(layer[i], layer[(i + 1) % WIDTH]))).await;
        layer = next.into_iter().map(|r| r.expect("add")).collect();
    }
    layer[0]
}

fn bench(c: &mut Criterion) {
    let graph = dag();
    let ctx = RunContext::new();
    assert_eq!(futures::executor::block_on(graph.run(1, &ctx)).expect("run"), futures::executor::block_on(by_hand(1)));
    let mut g = c.benchmark_group("dag_100_nodes");
    g.bench_function("graph", |b| b.iter(|| futures::executor::block_on(graph.run(1, &ctx)).expect("run")));
    g.bench_function("join_all_by_hand", |b| b.iter(|| futures::executor::block_on(by_hand(1))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
