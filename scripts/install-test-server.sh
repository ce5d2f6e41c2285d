#!/usr/bin/env bash
# Installs llama-cpp-python's OpenAI-compatible server into models/.pyserver (not into the system Python), for
# the remote-model tests: they start it on 127.0.0.1 serving SmolLM2. It compiles llama.cpp (needs cmake and a
# C++ compiler; about 3.5 minutes on 2 cores). Idempotent.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
models="${SLM_MODELS_DIR:-$root/models}"
PYTHON=${PYTHON:-python3}
target="$models/.pyserver"

if PYTHONPATH="$target" "$PYTHON" -c "import llama_cpp.server.app, uvicorn" 2>/dev/null; then
    echo "install-test-server: ok   llama-cpp-python server" >&2
    exit 0
fi
echo "install-test-server: building llama-cpp-python[server]==0.3.36 (a few minutes)" >&2
mkdir -p "$models"
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$target" \
    "llama-cpp-python[server]==0.3.36"
echo "install-test-server: ok   llama-cpp-python server" >&2
