#!/usr/bin/env bash
# The `make run` demo: runs the hmha CLI on the small shipped example in demo/
# (see demo/README.md) and checks the result against what PyTorch computed.
# Prints every command it runs, so it doubles as a tutorial for the CLI.
# Writes only to a temporary directory; exits non-zero if the result differs.
#
#   scripts/demo.sh [BUILD_DIR]     (default: build)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build_arg=${1:-build}
if ! build=$(cd "$build_arg" 2>/dev/null && pwd); then
    echo "demo: build directory '$build_arg' not found; run 'make build' first" >&2
    exit 1
fi
hmha="$build/hmha"
if [ ! -x "$hmha" ]; then
    echo "demo: $hmha not found; run 'make build' first" >&2
    exit 1
fi
for f in weights inputs expected; do
    if [ ! -f "$root/demo/$f.safetensors" ]; then
        echo "demo: demo/$f.safetensors is missing from the checkout" >&2
        exit 1
    fi
done
if [ ! -f "$root/demo/args.txt" ]; then
    echo "demo: demo/args.txt (the flags of the demo run) is missing from the checkout" >&2
    exit 1
fi

# One line of CLI flags, e.g. "--num-heads 4 --batch-first".
read -r -a flags < "$root/demo/args.txt"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hmha-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
out="$tmp/output.safetensors"

# Paths are shown relative to the checkout so the commands can be copied.
cd "$root"
shown_hmha=$hmha
case "$hmha" in "$root"/*) shown_hmha=${hmha#"$root"/} ;; esac

show() {
    local cmd=("$@")
    [ "${cmd[0]}" = "$hmha" ] && cmd[0]=$shown_hmha
    printf '$'
    printf ' %q' "${cmd[@]}"
    printf '\n'
    "$@"
}
step() {
    printf '\n== %s\n' "$*"
}

echo "HalideMHA demo: torch.nn.MultiheadAttention (eval mode) computed by Halide kernels."
echo "Data and what it means: demo/README.md. Flags for this run (demo/args.txt): ${flags[*]}"

step "1. What goes in: the module's state_dict and the forward inputs"
show "$hmha" inspect demo/weights.safetensors demo/inputs.safetensors

step "2. Run it (--verbose prints the shapes and the forward time)"
start=$(date +%s%N)
show "$hmha" run --weights demo/weights.safetensors --inputs demo/inputs.safetensors \
    --output "$out" "${flags[@]}" --verbose
end=$(date +%s%N)
# date +%N is a GNU extension; elsewhere skip the wall-clock line.
if [[ $start =~ ^[0-9]+$ && $end =~ ^[0-9]+$ ]]; then
    echo "whole command, including loading and saving: $(( (end - start) / 1000000 )) ms"
fi

step "3. What comes out"
show "$hmha" inspect "$out"

step "4. Compare with PyTorch's result (demo/expected.safetensors)"
if show "$hmha" compare "$out" demo/expected.safetensors; then
    printf '\ndemo: OK, hmha matches torch.nn.MultiheadAttention.\n'
else
    printf '\ndemo: FAILED, the output differs from PyTorch (see above).\n' >&2
    exit 1
fi
