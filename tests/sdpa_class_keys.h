// Key counts past kSdpaRowsMaxKeys for the tests that check each online sdpa
// class and its _copy_v twin ran (runtime/src/sdpa_classes.h), from the key
// blocks as built (CMakeLists.txt passes HMHA_SDPA_KEY_BLOCK and
// HMHA_SDPA_SHORT_KEY_BLOCK to the test programs): the first lands in
// sdpa_short and the second in sdpa wherever the long block is a larger
// multiple of the short one (tests/cpu_dispatch.cpp asserts it), with x86's
// tuned blocks (512 and 128) and the untuned ones (256 and 128: the AArch64
// build, make bench-report's untuned build) alike.
#pragma once

#include <cstdint>
#include <numeric>

#include "../runtime/src/sdpa_classes.h"

// One key past a whole number of long blocks: the short class pads it less.
constexpr int64_t kShortClassKeys = hmha::padded_keys(hmha::kSdpaRowsMaxKeys + 1, HMHA_SDPA_KEY_BLOCK) + 1;
// A multiple of both key blocks: the long class pads it no more, and wins the tie.
constexpr int64_t kLongClassKeys =
    hmha::padded_keys(hmha::kSdpaRowsMaxKeys + 1, std::lcm(HMHA_SDPA_KEY_BLOCK, HMHA_SDPA_SHORT_KEY_BLOCK));
