// How the runtime splits its calls: how many batches one pass of the CPU's
// Sequence path holds (hmha::Options::batch_chunk = 0) and how many queries a
// causal sdpa call or a need_weights round takes, for the runtime (mha.cpp),
// the bench's kernel driver (bench/peers/kernel_mha.cpp), which must chunk
// alike, and the GPU tuner (bench/gpu/gpu_tune.cpp), which times the
// need_weights kernels at the rounds' size. Dependency-free on purpose.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace hmha {

// Queries per call when causal blocks are skipped on the CPU (mha.cpp, forward()):
// sdpa's, and with need_weights softmax_attend(_mean)'s, whose hidden weights
// the runtime zeroes. Measured for the latter on 2 cores (2026-11-27),
// averaged weights, against one call on all keys: (1, 4096, 4096, 512, 8)
// 340 -> 230 ms, (1, 2048, 2048, 1024, 16) 232 -> 180, (4, 512, 512, 512, 8)
// 38.3 -> 36.1; 128 ties 256 at the last, 512 is slower there, 64 slower
// still (every call transposes its keys again).
constexpr int64_t kCausalQueryChunk = 256;
// Queries per softmax_attend or softmax_attend_mean call (GPU: masked_softmax,
// attend and head_mean round) in the need_weights path. Each call transposes
// every head's keys again, so shorter chunks cost more: 128 was 1.3x slower at
// (1, 4096, 4096, 512, 8). On a GPU it bounds the per-head weights' scratch
// (H x 1024 x S floats a batch) and sets attend's grid: the GPU tuner times
// those kernels at this many queries (an attend schedule that won at
// L = 4096 on an H100 was 2.3x slower at 1024: bench/results/h100-2026-11-27b.md).
constexpr int64_t kWeightsQueryChunk = 1024;

// The threads of Halide's pool: HL_NUM_THREADS, else one per core.
inline int64_t halide_threads() {
    if (const char *env = std::getenv("HL_NUM_THREADS")) {
        const int64_t v = std::atoll(env);
        if (v > 0) return v;
    }
    return std::max(1u, std::thread::hardware_concurrency());
}

// About bytes_per_thread of Q, K, V and attention scratch (2 * (L + keys) * E
// floats a batch) per thread, at least one batch: at (32, 128, 128, 256, 4) on
// 2 cores (512 KiB a batch) one pass over all 32 batches measured 15.3-15.5
// ms, passes of 4 batches 13.8 and of 1 batch 13.9-14.5 (alternated; the
// 24 MiB of one pass leave the cache between its kernels).
inline int64_t auto_batch_chunk(int64_t L, int64_t keys, int64_t E, int64_t bytes_per_thread) {
    const int64_t per_batch = std::max<int64_t>(2 * (L + keys) * E * (int64_t)sizeof(float), 1);
    return std::max<int64_t>(1, bytes_per_thread * halide_threads() / per_batch);
}

}  // namespace hmha
