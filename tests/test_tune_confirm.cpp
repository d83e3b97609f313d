// The CPU tuner's second look at its winners (bench/tune/confirm.h): which
// candidate, if any, is written instead of the defaults, from paired rounds'
// time ratios (candidate / defaults in the same round).
#include <catch2/catch.hpp>

#include <limits>

#include "../bench/tune/confirm.h"

using hmha_tune::confirm;
using hmha_tune::median;

TEST_CASE("tuner: median of odd and even counts", "[tune]") {
    CHECK(median({3.0, 1.0, 2.0}) == 2.0);
    CHECK(median({4.0, 1.0, 3.0, 2.0}) == 2.5);
    CHECK(median({0.9}) == 0.9);
}

TEST_CASE("tuner: a candidate is written only where it beats the defaults by the margin", "[tune]") {
    const double margin = 0.02;
    SECTION("the fastest qualifying candidate wins, by its per-class medians' mean") {
        // Candidate 0: medians 0.95 and 0.97 (mean 0.96); candidate 1: 0.90 and 0.96 (0.93); one
        // round of candidate 1 was an outlier (0.5) that its median ignores.
        const auto c = confirm({{{0.95, 0.99, 0.94}, {0.97, 0.97, 1.2}}, {{0.90, 0.5, 0.91}, {0.96, 0.95, 0.99}}},
                               margin);
        REQUIRE(c.chosen == 1);
        CHECK(c.mean[0] == Approx(0.96));
        CHECK(c.mean[1] == Approx(0.93));
        CHECK(c.worst[1] == Approx(0.96));
    }
    SECTION("within the margin of the defaults: the defaults stay") {
        const auto c = confirm({{{0.99, 0.985, 0.99}}, {{1.01, 0.97, 1.0}}}, margin);
        CHECK(c.chosen == -1);
        CHECK(c.mean[0] == Approx(0.99));
    }
    SECTION("faster on average but slower than the margin allows at one class: not written") {
        // Mean 0.925, but 1.05 at the second class.
        const auto c = confirm({{{0.8, 0.8, 0.8}, {1.05, 1.05, 1.04}}}, margin);
        CHECK(c.chosen == -1);
        CHECK(c.worst[0] == Approx(1.05));
        // The same with a class at +1% (inside the margin): written.
        CHECK(confirm({{{0.8, 0.8, 0.8}, {1.01, 1.01, 1.0}}}, margin).chosen == 0);
    }
    SECTION("a candidate that failed in any round cannot be chosen") {
        const double inf = std::numeric_limits<double>::infinity();
        const auto c = confirm({{{0.5, inf, 0.5}}, {{0.9, 0.9, 0.9}}}, margin);
        CHECK(c.chosen == 1);
        CHECK(c.mean[0] == inf);
    }
    SECTION("no candidates, or none with rounds") {
        CHECK(confirm({}, margin).chosen == -1);
        CHECK(confirm({{{}}}, margin).chosen == -1);
    }
    SECTION("a zero margin still needs the candidate faster on average") {
        CHECK(confirm({{{1.0, 1.0, 1.0}}}, 0.0).chosen == -1);
        CHECK(confirm({{{0.999, 1.0, 0.998}}}, 0.0).chosen == 0);
    }
}
