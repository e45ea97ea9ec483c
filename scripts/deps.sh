#!/usr/bin/env bash
# System packages terafab needs to build and test, installed when missing (Debian/Ubuntu, as
# root or through sudo). Sourced by scripts/test.sh and scripts/terafab; run on its own to
# install them:
#
#   scripts/deps.sh
#
# - llvm-19-dev: the LLVM CPU backend (inkwell on LLVM 19, linked dynamically; the path is set
#   by .cargo/config.toml: LLVM_SYS_191_PREFIX=/usr/lib/llvm-19)
# - python3-venv: the test-data generator's venv (Debian splits out `venv`)
# - a C compiler (gcc): `terafab compile` links shared libraries with it, and the tests build
#   the C example against them

terafab_system_packages() {
    local pkgs=(llvm-19-dev)
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        pkgs+=(python3 python3-venv)
    fi
    if ! command -v cc >/dev/null 2>&1; then
        pkgs+=(gcc libc6-dev)
    fi
    echo "${pkgs[@]}"
}

install_system_deps() {
    local missing=() pkg
    # shellcheck disable=SC2207
    local wanted=($(terafab_system_packages))
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "error: missing system packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    echo "==> installing system packages: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    install_system_deps
fi
