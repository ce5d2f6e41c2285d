use slm_agents::prelude::*;
use std::time::Instant;
const P: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
fn req(i: usize) -> Request {
    Request::chat([Message::user(format!("Write a long story number {i} about a lighthouse keeper."))])
        .with_max_tokens(128)
}
fn run_seq(m: &LlamaModel) -> f64 {
    let t = Instant::now();
    let mut n = 0;
    for i in 0..4 {
        n += futures::executor::block_on(m.complete(req(i))).unwrap().usage.completion_tokens;
    }
    n as f64 / t.elapsed().as_secs_f64()
}
fn run_conc(ms: &[LlamaModel]) -> f64 {
    let t = Instant::now();
    let futs = (0..4).map(|i| ms[i % ms.len()].complete(req(i)));
    let r = futures::executor::block_on(futures::future::join_all(futs));
    let n: usize = r.into_iter().map(|c| c.unwrap().usage.completion_tokens).sum();
    n as f64 / t.elapsed().as_secs_f64()
}
fn main() {
    let m2 = LlamaModel::builder(P).threads(2).slots(4).load().unwrap();
    let m1 = LlamaModel::builder(P).threads(1).slots(4).load().unwrap();
    let a = LlamaModel::builder(P).threads(1).slots(1).load().unwrap();
    let b = LlamaModel::builder(P).threads(1).slots(1).load().unwrap();
    run_seq(&m2);
    for _ in 0..2 {
        let s2 = run_seq(&m2);
        let c2 = run_conc(&[m2.clone()]);
        let s1 = run_seq(&m1);
        let c1 = run_conc(&[m1.clone()]);
        let cab = run_conc(&[a.clone(), b.clone()]);
        println!("2thr seq {s2:.0} conc {c2:.0} ({:.2}x) | 1thr seq {s1:.0} conc {c1:.0} ({:.2}x) | 2 lanes x1thr conc {cab:.0} ({:.2}x vs 2thr seq, {:.2}x vs 1thr seq)", c2/s2, c1/s1, cab/s2, cab/s1);
    }
}
