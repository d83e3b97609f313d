// Autoscheduler estimates (only autoschedulers read them). Every generator
// estimates its inputs and outputs at one MHA shape (N, L, S, E, H), given by
// its GeneratorParam `estimate` as "N,L,S,E,H"; the default is issue 4's first
// bench shape. An autoscheduled pipeline is only valid for extents at least
// its tiles (Anderson2021 splits with ShiftInwards), so the bench builds an
// autoscheduled peer per shape it times, as a user would for theirs.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "Halide.h"

namespace hmha_gen {

constexpr const char *kDefaultEstimate = "4,512,512,512,8";

struct ShapeEstimate {
    int n, l, s, e, h;

    using Region = Halide::Region;
    static Region extents(std::initializer_list<int> e) {
        Region r;
        for (int x : e) r.push_back(Halide::Range(0, x));
        return r;
    }
    int d() const { return e / h; }
    Region heads(int rows) const { return extents({d(), h, rows, n}); }  // q, k, v, out: (D, H, rows, N)
    Region keys_transposed() const { return extents({s, d(), h, n}); }  // (S, D, H, N)
    Region weights() const { return extents({s, l, h, n}); }            // (S, L, H, N)
    Region mean() const { return extents({s, l, n}); }                  // (S, L, N)
    Region rows() const { return extents({e, n * l}); }                 // linear's x and y: (E, N L)
};

// "N,L,S,E,H", each positive and H dividing E.
inline ShapeEstimate parse_estimate(const std::string &text) {
    std::vector<int> v;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        try {
            v.push_back(std::stoi(item));
        } catch (const std::exception &) {
            v.push_back(0);
        }
    }
    if (v.size() != 5 || v[0] < 1 || v[1] < 1 || v[2] < 1 || v[3] < 1 || v[4] < 1 || v[3] % v[4] != 0) {
        throw std::invalid_argument("estimate: expected N,L,S,E,H (positive, H dividing E), got '" + text + "'");
    }
    return {v[0], v[1], v[2], v[3], v[4]};
}

}  // namespace hmha_gen
