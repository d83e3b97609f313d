// The CPU fused attention's shape classes (CMakeLists.txt, HMHA_CPU_CLASS_KERNELS):
// `sdpa` with long key blocks, `sdpa_short` with short ones (both the online
// softmax over key blocks), and `sdpa_rows`, which takes a query block's whole
// rows of keys at once and pads none. Which one a call with `keys` keys runs is
// decided here, for the runtime (kernels.cpp), the bench's kernel driver
// (bench/peers/kernel_mha.h) and the test that checks every class ran
// (tests/test_reference.cpp). Dependency-free on purpose.
#pragma once

#include <cstdint>

namespace hmha {

// Keys rounded up to whole blocks of `block`.
inline int64_t padded_keys(int64_t keys, int64_t block) {
    return (keys + block - 1) / block * block;
}

// Whether the short class pads `keys` less than the long one; the long one
// wins a tie (its bigger blocks run faster when both are full).
inline bool use_short_key_block(int64_t keys, int64_t key_block, int64_t short_key_block) {
    return padded_keys(keys, short_key_block) < padded_keys(keys, key_block);
}

// sdpa_rows up to this many keys. Its scratch is a query block's scores and
// exponentials, 2 x query_block x keys floats a thread (1 MiB at 128 x 1024),
// so it is capped where the online classes' key blocks bound theirs. Measured
// (hmha_tune, AVX-512, 2026-11-26, (2, 512, S, 512, 8)): rows against the
// better online class 0.81 / 0.96 ms at S = 64, 2.3 / 2.8 at 192, 3.0 / 3.4 at
// 256, 4.4 / 5.0 at 384, 8.3 / 10.3 at 700, 12.4 / 12.8 at 1024; at
// (1, 512, S, 512, 8) still 12.4 / 12.7 at 2048 and even at 4096.
constexpr int64_t kSdpaRowsMaxKeys = 1024;

inline bool use_rows(int64_t keys) {
    return keys <= kSdpaRowsMaxKeys;
}

}  // namespace hmha
