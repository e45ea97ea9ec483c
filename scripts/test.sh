#!/usr/bin/env bash
# The test command of terafab: formatting, lints and every test of the workspace.
#
#   scripts/test.sh
#
# Steps, in order (each stops the script on failure):
#   1. check_toolchain       cargo, rustfmt and clippy are installed (else: how to install them)
#   2. install_system_deps   system packages the tests need (scripts/deps.sh: llvm-19-dev,
#                            python3-venv, a C compiler; apt-get, only what is missing)
#   3. prepare_test_data     the ONNX conformance cases (scripts/onnx-testdata.sh: a Python venv
#                            with a pinned onnx writes them once into ~/.cache/terafab)
#   4. prepare_ptxas         ptxas for the GPU backend's PTX tests (scripts/ptxas.sh: the pip
#                            wheel nvidia-cuda-nvcc-cu12, ~40 MB once, cached; no GPU needed);
#                            if it cannot be installed the tests print SKIPPED for that part
#   5. cargo fmt --check, cargo clippy -D warnings, cargo test
#
# A new preparation step is a function here and one call in `main`.
#
# One build profile for everything: the plain dev/test profile (opt-level 1, see Cargo.toml).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "==> $*" >&2; }

check_toolchain() {
    if ! command -v cargo >/dev/null 2>&1; then
        cat >&2 <<'MSG'
error: `cargo` was not found. Install the Rust toolchain with rustup:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"

then run scripts/test.sh again.
MSG
        exit 1
    fi
    if ! cargo fmt --version >/dev/null 2>&1; then
        echo "error: cargo fmt is missing; install it with: rustup component add rustfmt" >&2
        exit 1
    fi
    if ! cargo clippy --version >/dev/null 2>&1; then
        echo "error: cargo clippy is missing; install it with: rustup component add clippy" >&2
        exit 1
    fi
}

# System packages (LLVM 19 for the LLVM backend, python3-venv, a C compiler): scripts/deps.sh.
# shellcheck source=scripts/deps.sh
. scripts/deps.sh

# Write the ONNX backend test cases (once; cached across runs) and point the tests at them.
prepare_test_data() {
    log "ONNX conformance cases (generated once, then cached)"
    TERAFAB_ONNX_CASES="$(scripts/onnx-testdata.sh | tail -n 1)"
    export TERAFAB_ONNX_CASES
}

# ptxas (from a pip wheel) so that the GPU backend's tests assemble the PTX they emit.
prepare_ptxas() {
    log "ptxas for the GPU backend's tests (installed once, then cached)"
    if TERAFAB_PTXAS="$(scripts/ptxas.sh | tail -n 1)"; then
        export TERAFAB_PTXAS
    else
        log "warning: ptxas could not be installed; the PTX assembly checks will be skipped"
    fi
}

main() {
    check_toolchain
    install_system_deps
    prepare_test_data
    prepare_ptxas

    log "cargo fmt --all -- --check"
    cargo fmt --all -- --check
    log "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
    log "cargo test --workspace"
    cargo test --workspace
    log "all checks passed"
}

main "$@"
