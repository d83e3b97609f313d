// Key counts past kSdpaRowsMaxKeys that the runtime gives to each online sdpa
// class (runtime/src/sdpa_classes.h), for the key blocks as built
// (CMakeLists.txt passes HMHA_SDPA_KEY_BLOCK and HMHA_SDPA_SHORT_KEY_BLOCK to
// the test programs): the tests that check each _copy_v class ran.
#pragma once

#include <cstdint>
#include <numeric>

#include "../runtime/src/sdpa_classes.h"

// One key past the short class's blocks: sdpa_short pads it less.
constexpr int64_t kShortClassKeys = hmha::kSdpaRowsMaxKeys + HMHA_SDPA_SHORT_KEY_BLOCK + 1;
// A multiple of both key blocks: the long class pads it no more, and wins the tie.
constexpr int64_t kLongClassKeys =
    hmha::padded_keys(hmha::kSdpaRowsMaxKeys + 1, std::lcm(HMHA_SDPA_KEY_BLOCK, HMHA_SDPA_SHORT_KEY_BLOCK));
static_assert(!hmha::use_rows(kShortClassKeys) && !hmha::use_rows(kLongClassKeys));
static_assert(hmha::use_short_key_block(kShortClassKeys, HMHA_SDPA_KEY_BLOCK, HMHA_SDPA_SHORT_KEY_BLOCK));
static_assert(!hmha::use_short_key_block(kLongClassKeys, HMHA_SDPA_KEY_BLOCK, HMHA_SDPA_SHORT_KEY_BLOCK));
