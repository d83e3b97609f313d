// The CPU fused attention's shape classes (CMakeLists.txt, HMHA_CPU_CLASS_KERNELS):
// `sdpa` with long key blocks, `sdpa_short` with short ones (both the online
// softmax over key blocks), and `sdpa_rows`, which takes a query block's whole
// rows of keys at once and pads none; each also built copying each head's V
// into contiguous rows first (_copy_v). Which one a call runs is decided here
// (choose_sdpa), for the runtime (kernels.cpp), the bench's kernel driver
// (bench/peers/kernel_mha.h) and the tests that check every class ran
// (tests/test_reference.cpp, tests/cpu_dispatch.cpp). Dependency-free on purpose.
#pragma once

#include <cstdint>

namespace hmha {

// Keys rounded up to whole blocks of `block`.
constexpr int64_t padded_keys(int64_t keys, int64_t block) {
    return (keys + block - 1) / block * block;
}

// Whether the short class pads `keys` less than the long one; the long one
// wins a tie (its bigger blocks run faster when both are full).
constexpr bool use_short_key_block(int64_t keys, int64_t key_block, int64_t short_key_block) {
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

constexpr bool use_rows(int64_t keys) {
    return keys <= kSdpaRowsMaxKeys;
}

// The _copy_v classes (sdpa_copy_v, sdpa_short_copy_v, sdpa_rows_copy_v,
// softmax_attend_copy_v, softmax_attend_mean_copy_v: the kernels copying each
// head's V into S' contiguous rows of head_dim floats before its products)
// where V's rows are at least kCopyValuesMinRowStride floats apart (the
// Sequence path's V scratch: E floats or more; or closer with many keys,
// below) and at least kCopyValuesMinQueries queries read them. Measured (hmha_tune, AVX2 on
// Zen 3, 2026-11-27, ms, plain / copied): softmax_attend_mean
// (1, 2048, 1024, 1024, 16) 122-126 / 93-99, (1, 512, 512, 512, 8)
// 6.3-7.6 / 6.2-7.0, (4, 128, 128, 256, 4) 0.98-1.00 / 0.87-0.97; sdpa_rows E = 1024
// (1, 2048, 1024, 1024, 16) 106-117 / 72-75, (8, 128, 128, 1024, 16)
// 6.6-7.0 / 5.5-6.4, (1, 16, 1000, 1024, 16) 1.64-1.96 / 1.51-1.80, but
// (1, 1, 1000, 1024, 16) 0.80-0.81 / 0.83-0.94; E = 512 (1, 512, 512, 512, 8)
// 5.5-6.6 / 5.1-5.9, (8, 128, 64, 512, 8) 1.9-2.4 / 1.85-2.26; E = 256
// (4, 256, 256, 256, 4) 2.62-2.63 / 2.65-2.69 and (4, 128, 128, 256, 4)
// 0.64-1.14 / 0.66-1.25 (AVX-512 on Zen 4, 2026-11-27: 0.42-0.48 / 0.46-0.52
// there, and 52-59 / 50-55 at (1, 2048, 1024, 1024, 16)); softmax_attend
// (AVX2 on Zen 3, 2026-11-27) (1, 2048, 1024, 1024, 16) 149-161 / 123-140,
// (1, 512, 512, 512, 8) 8.2-8.3 / 7.5-7.8, (8, 128, 128, 1024, 16)
// 9.2-9.3 / 8.5-8.8, (4, 128, 128, 256, 4) 0.99-1.06 / 1.00-1.10; the
// online classes in schedules/cpu/sdpa.h.
// Rows closer than that are copied too where at least kCopyValuesManyKeys keys
// are read and the rows are at least kCopyValuesManyKeysMinRowStride floats
// apart (same machine and date, plain / copied): sdpa_rows (1, 1024, 1024,
// 256, 4) 10.0-10.1 / 8.5-8.8, (2, 256, 1024, 256, 4) 5.4-5.7 / 4.7-4.8,
// (1, 1024, 1024, 384, 6) 15.4-16.4 / 13.2-13.3; softmax_attend_mean
// (1, 512, 2048, 256, 4) 15.0-15.1 / 13.3, (1, 1024, 1024, 384, 6)
// 18.9-19.2 / 17.1-17.3; a tie at (1, 256, 1024, 320, 5) (1280-byte rows
// alias less) and on 256 keys or fewer ((4, 256, 256, 256, 4) above).
constexpr int64_t kCopyValuesMinRowStride = 512;
constexpr int64_t kCopyValuesMinQueries = 16;
constexpr int64_t kCopyValuesManyKeys = 1024;
constexpr int64_t kCopyValuesManyKeysMinRowStride = 256;

constexpr bool copy_values(int64_t value_row_stride, int64_t queries, int64_t keys) {
    const bool far_apart = value_row_stride >= kCopyValuesMinRowStride ||
                           (value_row_stride >= kCopyValuesManyKeysMinRowStride && keys >= kCopyValuesManyKeys);
    return far_apart && queries >= kCopyValuesMinQueries;
}

// A kernel or its _copy_v class (`copying`, null where not built) for
// `queries` queries reading `keys` rows of V `value_row_stride` floats apart.
template <class Fn>
constexpr Fn plain_or_copy_v(Fn plain, Fn copying, int64_t keys, int64_t queries, int64_t value_row_stride) {
    return copying != nullptr && copy_values(value_row_stride, queries, keys) ? copying : plain;
}

// softmax_attend_mean_long (and its _copy_v twin) from this many keys on:
// softmax_attend_mean with its Q.K^T and e.V a chunk of keys at a time
// (CMakeLists.txt). Measured (hmha_tune, AVX2 on Zen 3, 2026-11-27, ms, at the
// runtime's 1024-query rounds, whole rows in 64-query blocks (host.json's) /
// 512-key chunks in 128-query blocks): (1, 1024, 4096, 512, 8) 118.6 / 98.1,
// (1, 1024, 2048, 1024, 16) 107.1 / 89.8, (1, 1024, 2048, 512, 8) 52.8 / 44.6,
// (1, 1024, 1024, 1024, 16) 46.4 / 42.2, but (1, 1024, 1024, 512, 8) 27.5 /
// 28.8, (1, 512, 512, 512, 8) 5.38 / 5.28 and (4, 128, 128, 256, 4) 0.85 /
// 1.05 (256-key chunks 1.08).
constexpr int64_t kSoftmaxAttendMeanLongKeys = 1024;

// softmax_attend_long (and its _copy_v twin) from this many keys on: the
// per-head weights' softmax_attend with its Q.K^T and e.V 512 keys at a time.
// Measured as above, whole rows (64-query blocks) / 512-key chunks (128):
// (1, 1024, 4096, 512, 8) 127.5 / 89.2 (256-key chunks in 64-query blocks
// 82.4), (1, 2048, 1024, 1024, 16) 147.0 / 106.3 (118.0). Chunked, the
// scores of a chunk of keys are computed for every query of the block before
// the next chunk's, so each chunk of K^T is read from cache by every score
// tile; with only the products chunked the kernel was no faster.
constexpr int64_t kSoftmaxAttendLongKeys = 1024;

// The sdpa class to call for `keys` keys and `queries` queries, V's rows
// `value_row_stride` floats apart, from a set `ks` with fields sdpa,
// sdpa_short, sdpa_rows and their _copy_v twins (any null: not built) and
// sdpa_key_block, sdpa_short_key_block: the runtime's KernelSet
// (runtime/src/kernels.h) and the bench driver's (bench/peers/kernel_mha.h).
template <class Set>
auto choose_sdpa(const Set &ks, int64_t keys, int64_t queries, int64_t value_row_stride) {
    auto pick = [&](auto plain, auto copying) {
        return plain_or_copy_v(plain, copying, keys, queries, value_row_stride);
    };
    if (ks.sdpa_rows != nullptr && use_rows(keys)) return pick(ks.sdpa_rows, ks.sdpa_rows_copy_v);
    if (ks.sdpa_short != nullptr && use_short_key_block(keys, ks.sdpa_key_block, ks.sdpa_short_key_block)) {
        return pick(ks.sdpa_short, ks.sdpa_short_copy_v);
    }
    return pick(ks.sdpa, ks.sdpa_copy_v);
}

}  // namespace hmha
