#!/usr/bin/env bash
# bench/gpu/run.sh's time budget, without a GPU: run.sh in a scratch tree
# whose bundle holds stand-ins that log their arguments and return at once,
# with a budget that leaves no time for the caps check, none for the first
# of two cap sweeps and the rest for the second. A GPU session's device time
# is short (bench/README.md), so a step that overruns it costs the run.
#
#   tests/gpu_run_budget.sh RUN_SH WORK_DIR
set -euo pipefail
run_sh=$1
work=$2
rm -rf "$work"
mkdir -p "$work/tree/bench/gpu" "$work/tree/.gpu-bundle" "$work/out"
cp "$run_sh" "$work/tree/bench/gpu/run.sh"
for bin in hmha_tests hmha_bench hmha_gpu_tune; do
    printf '#!/bin/sh\necho "%s $*"\n' "$bin" > "$work/tree/.gpu-bundle/$bin"
    chmod +x "$work/tree/.gpu-bundle/$bin"
done
printf 'import sys\nprint("compare.py", " ".join(sys.argv[1:]))\n' > "$work/tree/bench/gpu/compare.py"

# 200 s, 150 of them kept for the table: the caps check needs 60 more than
# that plus two minutes, so it is skipped; the few-rows timing gets its 40;
# the first of two sweeps would get (200 - 150) / 2 = 25 < 30 s, so it is
# skipped, and the second gets the 50 s (49 if a second has gone by).
OUT="$work/out" HMHA_GPU_BUDGET_S=200 HMHA_GPU_COMPARE_S=150 HMHA_GPU_CAPS="0 128" HMHA_GPU_PEERS=0 \
    bash "$work/tree/bench/gpu/run.sh" > "$work/run.log" 2>&1 || true

fail=0
expect() {  # expect FILE REGEX WHAT
    if ! grep -Eq -- "$2" "$work/out/$1"; then
        echo "FAIL: $3: no /$2/ in $1:"
        cat "$work/out/$1" 2> /dev/null || echo "(missing)"
        fail=1
    fi
}
expect tests-cuda.log "^hmha_tests --hmha-device=cuda" "the CUDA suites run"
expect caps.log "^skipped: the caps check \([0-9]+ s of the 200 s budget gone" "the caps check is skipped"
expect few-rows.log "^hmha_gpu_tune .*--kernels linear --match split_k" "the few-rows timing runs"
expect gpu-tune-regs0.log "^skipped: the sweep at register cap 0 " "the first sweep is skipped"
expect gpu-tune-regs128.log "^hmha_gpu_tune .* --deadline (49|50) " "the second sweep gets the time left"
expect compare.log "^compare.py .*--times .*gpu-times.jsonl" "the table runs"
[ "$fail" = 0 ] && echo "run.sh kept to its budget"
exit "$fail"
