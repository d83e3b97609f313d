#!/usr/bin/env bash
# Step 2 of the GPU run, on the GPU machine, from the repository root, with
# .gpu-bundle/ made by bench/gpu/bundle.sh. Writes everything to $OUT (the
# device tool's output folder) or bench/results/gpu-<date>/:
#   machine.txt        nvidia-smi and the bundle's commit
#   tests-cuda.log     the device-independent suites on CUDA (reference, PyTorch
#                      fixtures, semantics, device tensors); exit code at the end
#   tests-cpu.log      the CPU suites on that machine's CPU
#   bench-cuda.json    the MHA forward on CUDA (Google Benchmark JSON)
#   torch-cuda.txt     PyTorch nn.MultiheadAttention and F.scaled_dot_product_attention,
#                      float32, same GPU, same run
#   gpu-tune.log       every GPU kernel variant of the schedule sweep, checked
#   cuda.json          and timed; the winners: copy to schedules/tuned/cuda.json
#                      here and rebuild for the tuned CUDA kernels
# Exits non-zero if the CUDA tests failed or were skipped (no GPU found).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle="$root/.gpu-bundle"
out=${OUT:-$root/bench/results/gpu-$(date +%F)}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib:${LD_LIBRARY_PATH:-}"
export HMHA_GOLDEN_DIR="$root/tests/golden"
cd "$root"

{
    date -u
    echo "commit $(cat "$bundle/commit" 2>/dev/null)"
    nvidia-smi
    nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,memory.total --format=csv
} > "$out/machine.txt" 2>&1

"$bundle/hmha_tests" --hmha-device=cuda "[reference],[golden],[semantics],[device]" > "$out/tests-cuda.log" 2>&1
cuda_rc=$?
echo "exit code $cuda_rc" >> "$out/tests-cuda.log"
"$bundle/hmha_tests" "~[device]~[cli]~[install]" > "$out/tests-cpu.log" 2>&1
echo "exit code $?" >> "$out/tests-cpu.log"

"$bundle/hmha_bench" --hmha-device=cuda --benchmark_filter='mha_forward/N4_L512_S512_E512_H8/|mha_forward/N1_L4096_S4096_E512_H8/fused' \
    --benchmark_repetitions=5 --benchmark_report_aggregates_only=true --benchmark_format=json \
    > "$out/bench-cuda.json" 2> "$out/bench-cuda.log"

PYTHONUNBUFFERED=1 python3 bench/peers/torch_mha.py --device cuda > "$out/torch-cuda.txt" 2>&1

"$bundle/hmha_gpu_tune" --device cuda --verbose --out "$out/cuda.json" > "$out/gpu-tune.log" 2>&1
echo "exit code $?" >> "$out/gpu-tune.log"

tail -3 "$out/tests-cuda.log"
exit $cuda_rc
