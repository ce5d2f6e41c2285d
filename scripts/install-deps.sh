#!/usr/bin/env bash
# Installs the system packages the build and the model download need, when they are missing (Debian).
#   cmake, libclang (bindgen for llama-cpp-sys-2; libclang1 alone fails with "stdbool.h not found"),
#   python3 with pip (scripts/fetch-models.sh downloads the models as PyPI wheels).
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
    need+=(libclang1-14 libclang-common-14-dev)
elif ! ls /usr/lib/llvm-*/lib/clang/*/include/stdbool.h >/dev/null 2>&1; then
    need+=(libclang-common-14-dev)
fi
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "install-deps: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
