// How many batches one pass of the CPU's Sequence path holds
// (hmha::Options::batch_chunk = 0), for the runtime (mha.cpp) and the bench's
// kernel driver (bench/peers/kernel_mha.cpp), which must chunk alike.
// Dependency-free on purpose.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace hmha {

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
