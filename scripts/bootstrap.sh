#!/usr/bin/env bash
# Installs what the build needs and nothing more: Debian packages (when run as
# root and missing) and a venv with the pinned Halide, CMake and Ninja.
# Idempotent and quick when everything is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${HMHA_VENV:-$HOME/.cache/hmha/venv}

# g++-aarch64-linux-gnu and qemu-user: the arm-64-linux cross build and its
# tests (make test-arm64); qemu-user also emulates x86-64 CPUs without AVX-512
# for the CPU dispatch tests.
debs=(g++ make python3-venv catch2 libopenblas-dev libbenchmark-dev nlohmann-json3-dev libpng-dev
      pocl-opencl-icd ocl-icd-opencl-dev g++-aarch64-linux-gnu qemu-user)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing Debian packages (run as root or install them): ${missing[*]}" >&2
        exit 1
    fi
fi

stamp="$venv/.hmha-requirements"
if ! cmp -s "$root/requirements.txt" "$stamp" 2>/dev/null; then
    echo "bootstrap: creating $venv with $(grep -v '^#' "$root/requirements.txt" | tr '\n' ' ')"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/requirements.txt"
    cp "$root/requirements.txt" "$stamp"
fi
