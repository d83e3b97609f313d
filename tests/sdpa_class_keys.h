// Key counts past kSdpaRowsMaxKeys for the tests that check each online sdpa
// class and its _copy_v twin ran (runtime/src/sdpa_classes.h), from the key
// blocks as built (CMakeLists.txt passes HMHA_SDPA_KEY_BLOCK and
// HMHA_SDPA_SHORT_KEY_BLOCK to the test programs). Which class each lands in
// depends on those blocks: with x86's tuned ones (512 and 128) the first goes
// to sdpa_short and the second to sdpa (tests/cpu_dispatch.cpp asserts it);
// with the untuned 256 and 128 (the AArch64 build) both go to sdpa, and
// test_reference.cpp reaches sdpa_short by appending keys.
#pragma once

#include <cstdint>
#include <numeric>

#include "../runtime/src/sdpa_classes.h"

// One key past the short class's blocks.
constexpr int64_t kShortClassKeys = hmha::kSdpaRowsMaxKeys + HMHA_SDPA_SHORT_KEY_BLOCK + 1;
// A multiple of both key blocks: the long class pads it no more, and wins the tie.
constexpr int64_t kLongClassKeys =
    hmha::padded_keys(hmha::kSdpaRowsMaxKeys + 1, std::lcm(HMHA_SDPA_KEY_BLOCK, HMHA_SDPA_SHORT_KEY_BLOCK));
