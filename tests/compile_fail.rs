//! Wrong wiring of a graph does not compile: each file under tests/compile_fail/ must fail, with the error
//! recorded beside it.
//!
//! trybuild compiles each case against the crate with the features of this run, in the dev profile: with the
//! `llama` feature that would build llama.cpp a second time (minutes) for errors that do not involve it. So the
//! cases run in the engine-less build, which `make test` runs as well:
//! `cargo test --release --no-default-features --features test-util --test compile_fail` (regenerate the
//! expected errors with `TRYBUILD=overwrite` in front).

#[cfg(not(feature = "llama"))]
#[test]
fn wrong_graph_wiring_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
