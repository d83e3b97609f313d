// The CPU fused attention's shape classes (CMakeLists.txt, HMHA_CPU_CLASS_KERNELS):
// `sdpa` with long key blocks, `sdpa_short` with short ones. Which one a call
// with `keys` keys runs is decided here, for the runtime (kernels.cpp), the
// bench's kernel driver (bench/peers/kernel_mha.h) and the test that checks
// both classes ran (tests/test_reference.cpp). Dependency-free on purpose.
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

}  // namespace hmha
