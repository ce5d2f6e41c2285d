//! Wrong wiring of a graph does not compile: each file under tests/compile_fail/ must fail, with the error
//! recorded beside it (regenerate with `TRYBUILD=overwrite cargo test --release --test compile_fail`).

#[test]
fn wrong_graph_wiring_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
