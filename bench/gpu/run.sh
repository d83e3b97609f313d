#!/usr/bin/env bash
# Step 2 of the GPU run, on the GPU machine, from the repository root, with
# .gpu-bundle/ made by bench/gpu/bundle.sh. Writes everything to $OUT (the
# device tool's output folder) or bench/results/gpu-<date>/:
#   machine.txt        nvidia-smi and the bundle's commit
#   tests-cuda.log     the device-independent suites on CUDA (reference, PyTorch
#                      fixtures, semantics, device tensors); exit code at the end
#   caps.log           the register cap at work: the driver's registers per
#                      kernel entry and traced forwards, at three caps
#   tests-cuda-no-opt-in.log  only if those failed: again with
#                      HMHA_CUDA_SHARED_OPT_IN=0 (the rest of the run then too,
#                      where this passed)
#   gpu-tune.log       every GPU kernel variant of the schedule sweep at the
#   gpu-times.jsonl    issue's shapes, checked and timed (one JSON line each);
#   gpu-peers.log      the autoscheduled peers' logs (their times join gpu-times.jsonl);
#   few-rows.log       linear at 1-16 rows (a decode step's projections): the
#   few-rows.jsonl     untuned defaults (linear_few_rows' params) against the
#                      split-k variants, which the runtime does not call yet
#   cuda.json          the winners: copy to schedules/tuned/cuda.json here and
#                      rebuild (bundle.sh) for the tuned CUDA kernels
#   compare.log        ours against PyTorch nn.MultiheadAttention and F.sdpa,
#   compare.jsonl      float32, same GPU, same run (bench/gpu/compare.py): time,
#                      peak device memory, the SDPA kernel alone and the
#                      kernels against Anderson2021; the tables end the output
#   profile-*.txt      (HMHA_GPU_PROFILE=1) Nsight Compute, see the end
#   timeline-*.txt     (HMHA_GPU_TIMELINE=1) Nsight Systems' API and kernel
#                      summaries of the forward at (4, 512, 512, 512, 8)
# Exits non-zero if the CUDA tests failed or were skipped (no GPU found).
# Time: the whole run keeps within HMHA_GPU_BUDGET_S seconds (default 540:
# the device tool runs a command for at most 600), keeping
# HMHA_GPU_COMPARE_S (default 150) for the table: each step's timeout is cut
# to what is left, a step with nothing left is skipped (the logs say so), and
# each sweep gets an equal share of the time before the table as
# hmha_gpu_tune --deadline (a kernel it cuts short gets no winner; its times
# stay in gpu-times.jsonl).
# HMHA_GPU_CAPS="64 0" sweeps once per CUDA JIT register cap (see the sweep);
# the table always has a column at HMHA_GPU_ALT_REGISTERS (default 0: no cap).
# HMHA_GPU_RUN=compare skips the tests and the sweep (a re-run of the table),
# HMHA_GPU_RUN=final the sweep only (the tuned build's tests and table).
# A short sweep: HMHA_GPU_KERNELS=sdpa (hmha_gpu_tune --kernels) and
# HMHA_GPU_MATCH="text;text" (--match: the defaults and the variants whose
# params contain a text); HMHA_GPU_PEERS=0 skips the autoscheduled peers.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle="$root/.gpu-bundle"
out=${OUT:-$root/bench/results/gpu-$(date +%F)}
mkdir -p "$out"
if [ -f "$bundle/payload.tar.xz" ] && [ ! -d "$bundle/lib" ]; then tar -C "$bundle" -xJf "$bundle/payload.tar.xz"; fi
export LD_LIBRARY_PATH="$bundle/lib:${LD_LIBRARY_PATH:-}"
export HMHA_GOLDEN_DIR="$root/tests/golden"
cd "$root"

{
    date -u
    echo "commit $(cat "$bundle/commit" 2>/dev/null)"
    nvidia-smi
    nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,memory.total --format=csv
} > "$out/machine.txt" 2>&1

budget=${HMHA_GPU_BUDGET_S:-540}
compare_s=${HMHA_GPU_COMPARE_S:-150}
# Seconds a step wanting $1 may take, keeping $2 of the budget for later
# steps: $1, or what is left if that is less, and at least 1 (timeout 0
# would mean none).
step_s() {
    local left=$((budget - SECONDS - ${2:-0}))
    left=$((left < $1 ? left : $1))
    echo $((left < 1 ? 1 : left))
}
skipped() { echo "skipped: $1 (${SECONDS} s of the ${budget} s budget gone; HMHA_GPU_BUDGET_S)"; }

cuda_rc=0
run=${HMHA_GPU_RUN:-all}  # all, compare (no tests, no sweep) or final (no sweep)
if [ "$run" != compare ]; then
    timeout "$(step_s 150 "$compare_s")" "$bundle/hmha_tests" --hmha-device=cuda \
        "[reference],[golden],[semantics],[device]" > "$out/tests-cuda.log" 2>&1
    cuda_rc=$?
    echo "exit code $cuda_rc" >> "$out/tests-cuda.log"
    tail -3 "$out/tests-cuda.log"
    # The shared-memory opt-in (runtime/src/cuda_driver_hooks.h) wraps every
    # CUDA launch and was first built without a GPU: if the suites fail, they
    # run again without it, and where that passes the rest of the run goes
    # without it too (the logs say which).
    if [ "$cuda_rc" != 0 ]; then
        HMHA_CUDA_SHARED_OPT_IN=0 timeout "$(step_s 150 "$compare_s")" "$bundle/hmha_tests" --hmha-device=cuda \
            "[reference],[golden],[semantics],[device]" > "$out/tests-cuda-no-opt-in.log" 2>&1
        rc=$?
        echo "exit code $rc" >> "$out/tests-cuda-no-opt-in.log"
        echo "without the shared-memory opt-in:"; tail -3 "$out/tests-cuda-no-opt-in.log"
        if [ "$rc" = 0 ]; then export HMHA_CUDA_SHARED_OPT_IN=0; fi
    fi
    # The JIT's register cap at work (runtime/src/cuda_driver_hooks.h), into
    # caps.log: under Halide's cap, none and 128, the [device] check of what
    # the driver compiled (registers within the cap), then a traced forward at
    # (4, 512, 512, 512, 8), fused and need_weights: each kernel's wait and
    # each entry's registers and local bytes as the driver compiled them.
    for cap in "" 0 128; do
        echo "== register cap ${cap:-as built (Halide 21: 64)}" >> "$out/caps.log"
        t=$(step_s 60 $((compare_s + 120)))  # and two minutes for a sweep
        if [ "$t" -le 10 ]; then skipped "the caps check" >> "$out/caps.log"; break; fi
        env ${cap:+HMHA_CUDA_MAX_REGISTERS=$cap} ${cap:+HMHA_EXPECT_MAX_REGISTERS=$cap} timeout "$t" \
            "$bundle/hmha_tests" --hmha-device=cuda \
            "CUDA driver hooks: a forward's kernels, as the driver compiled them, keep to the register cap" \
            >> "$out/caps.log" 2>&1
        echo "check: exit code $?" >> "$out/caps.log"
        for nw in "" --need-weights; do
            env ${cap:+HMHA_CUDA_MAX_REGISTERS=$cap} HMHA_TRACE_KERNELS=1 timeout "$t" "$bundle/hmha_bench" --case ours \
                --hmha-device=cuda --shape 4,512,512,512,8 $nw --min-time 0 --min-reps 20 >> "$out/caps.log" 2>&1
        done
    done
    grep -E "^== |^check|^skipped|registers|\"ms\"" "$out/caps.log" | cut -c1-160
fi
if [ "$run" = all ]; then
    shapes="4,512,512,512,8;1,2048,2048,1024,16;1,4096,4096,512,8;32,128,128,256,4"
    sweep=()
    [ -n "${HMHA_GPU_KERNELS:-}" ] && sweep+=(--kernels "$HMHA_GPU_KERNELS")
    [ -n "${HMHA_GPU_MATCH:-}" ] && sweep+=(--match "$HMHA_GPU_MATCH")
    # Projections of a few rows (a decode step's query and output), where
    # linear_few_rows runs each output's k-long chain at memory latency: the
    # defaults (its params) against the split-k variants, for whether the
    # runtime should call one (about 10 s; not in the winners; before the
    # sweeps, which share out what is left).
    t=$(step_s 40 "$compare_s")
    if [ "$t" -le 10 ]; then
        skipped "the few-rows sweep" | tee "$out/few-rows.log"
    else
        timeout "$t" "$bundle/hmha_gpu_tune" --device cuda --verbose --peers none --kernels linear --match split_k \
            --shapes "1,1,128,512,8;4,1,128,512,8;16,1,128,512,8;1,1,128,1024,16;4,1,128,1024,16" \
            --out /tmp/hmha-few-rows.json --times "$out/few-rows.jsonl" > "$out/few-rows.log" 2>&1
        echo "exit code $?" >> "$out/few-rows.log"
        grep -E "^  linear" "$out/few-rows.log" | cut -c1-130
    fi
    # HMHA_GPU_CAPS="64 0": one sweep per CUDA JIT register cap
    # (HMHA_CUDA_MAX_REGISTERS, 0 = none), each into files of its own
    # (cuda-regs64.json, gpu-tune-regs64.log, ...), their times together in
    # gpu-times.jsonl (each record names its cap). Unset: one sweep under the
    # build's cap.
    read -r -a caps <<< "${HMHA_GPU_CAPS:-}"
    [ ${#caps[@]} = 0 ] && caps=("")
    : > "$out/gpu-times.jsonl"
    peers_s=0
    [ "${HMHA_GPU_PEERS:-1}" = 0 ] || peers_s=60
    for n in "${!caps[@]}"; do
        cap=${caps[$n]}
        sfx=${cap:+-regs$cap}
        # An equal share of what is left before the peers and the table.
        share=$(( (budget - SECONDS - compare_s - peers_s) / (${#caps[@]} - n) ))
        if [ "$share" -lt 30 ]; then skipped "the sweep${cap:+ at register cap $cap}" | tee "$out/gpu-tune$sfx.log"; continue; fi
        # --deadline stops it starting a kernel's shape or variant past its
        # share; the timeout is for a variant that hangs.
        env ${cap:+HMHA_CUDA_MAX_REGISTERS=$cap} timeout $((share + 30)) "$bundle/hmha_gpu_tune" --device cuda --verbose \
            --shapes "$shapes" --deadline "$share" --out "$out/cuda$sfx.json" --peers none \
            --times "$out/gpu-times$sfx.jsonl" "${sweep[@]}" > "$out/gpu-tune$sfx.log" 2>&1
        echo "exit code $?" >> "$out/gpu-tune$sfx.log"
        grep -h "^CUDA JIT register cap\|variants, .* runs, " "$out/gpu-tune$sfx.log"
        grep -A20 "^device cuda" "$out/gpu-tune$sfx.log"
        [ -n "$sfx" ] && cat "$out/gpu-times$sfx.jsonl" >> "$out/gpu-times.jsonl"
    done
    # The autoscheduled peers, each in a process of its own (a kernel that
    # faults leaves its process's CUDA context unusable): their records join
    # gpu-times.jsonl, their logs gpu-peers.log.
    [ "${HMHA_GPU_PEERS:-1}" = 0 ] || "$bundle/hmha_gpu_tune" --device cuda --list-peers | while read -r kernel shape; do
        t=$(step_s 60 "$compare_s")
        if [ "$t" -le 10 ]; then skipped "$kernel $shape" >> "$out/gpu-peers.log"; continue; fi
        timeout "$t" "$bundle/hmha_gpu_tune" --device cuda --verbose --peers only --kernels "$kernel" --shapes "$shape" \
            --out /tmp/hmha-peer.json --times /tmp/hmha-peer.jsonl >> "$out/gpu-peers.log" 2>&1
        echo "$kernel $shape: exit code $?" >> "$out/gpu-peers.log"
        cat /tmp/hmha-peer.jsonl >> "$out/gpu-times.jsonl" 2>/dev/null
        rm -f /tmp/hmha-peer.jsonl
    done
    grep -h "^ \{16\}(Anderson2021" "$out/gpu-peers.log" 2>/dev/null
fi

PYTHONUNBUFFERED=1 timeout "$(step_s 420 10)" python3 bench/gpu/compare.py --bench "$bundle/hmha_bench" \
    --times "$out/gpu-times.jsonl" --out "$out" --alt-registers "${HMHA_GPU_ALT_REGISTERS-0}" > "$out/compare.log" 2>&1
echo "exit code $?" >> "$out/compare.log"
# The tables (they end with the exit code), or the end of the log if they never came.
if grep -q '^MHA forward' "$out/compare.log"; then sed -n '/^MHA forward/,$p' "$out/compare.log"; else tail -5 "$out/compare.log"; fi
# HMHA_GPU_PROFILE=1: Nsight Compute on the first forward (fused, then
# need_weights) at (1, 4096, 4096, 512, 8): every kernel's throughput,
# occupancy, launch shape and warp stall reasons; HMHA_GPU_PROFILE=fused: the
# fused forward only (half the device time).
profile=${HMHA_GPU_PROFILE:-0}
if [ "$profile" != 0 ] && command -v ncu > /dev/null; then
    cases=("" "--need-weights")
    [ "$profile" = fused ] && cases=("")
    for nw in "${cases[@]}"; do
        name=profile-1x4096x4096x512x8${nw:+-need-weights}.txt
        timeout 150 ncu --launch-count 14 --section SpeedOfLight --section Occupancy --section LaunchStats \
            --section SchedulerStats --section WarpStateStats \
            --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
            "$bundle/hmha_bench" --case ours --hmha-device=cuda --shape 1,4096,4096,512,8 $nw \
            --min-time 0 --min-reps 1 > "$out/$name" 2>&1
        echo "$name: exit code $?"
    done
fi
# HMHA_GPU_TIMELINE=1: Nsight Systems on 50 forwards at (4, 512, 512, 512, 8),
# where ours took 0.84 ms against 0.61 ms of kernels (h100-2026-11-27.md): the
# CUDA API calls (launches, copies, allocations, synchronizations) and the
# kernels, summed, with the default and with Scratch::PerHead.
if [ "${HMHA_GPU_TIMELINE:-0}" != 0 ] && command -v nsys > /dev/null; then
    for scratch in sequence per-head; do
        name=timeline-4x512x512x512x8-$scratch.txt
        timeout 120 nsys profile --trace=cuda --stats=true --force-overwrite=true -o /tmp/hmha-timeline \
            "$bundle/hmha_bench" --case ours --hmha-device=cuda --shape 4,512,512,512,8 --scratch $scratch \
            --min-time 0 --min-reps 50 > "$out/$name" 2>&1
        echo "$name: exit code $?"
    done
fi
exit $cuda_rc
