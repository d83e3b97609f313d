// What the CPU tuner (bench/tune) and the GPU tuner (bench/gpu) share: the
// shape of an MHA case and the parsing of their --shapes and list arguments
// (the shape rule also hmha_bench's --shape).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace hmha_tune {

struct Shape {
    int N, L, S, E, H;
    std::string name() const {
        return "N" + std::to_string(N) + "_L" + std::to_string(L) + "_S" + std::to_string(S) + "_E" +
               std::to_string(E) + "_H" + std::to_string(H);
    }
};

inline std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t at; (at = s.find(sep, start)) != std::string::npos; start = at + 1) out.push_back(s.substr(start, at - start));
    out.push_back(s.substr(start));
    return out;
}

// The one rule for a shape on a command line (hmha_tune and hmha_gpu_tune's
// --shapes, hmha_bench's --shape): "N,L,S,E,H", five positive integers with H
// dividing E, into v; "" if so, else what is wrong (the expected form and the
// value given).
inline std::string shape_spec_error(const std::string &spec, int64_t (&v)[5]) {
    const std::vector<std::string> parts = split(spec, ',');
    bool good = parts.size() == 5;
    for (size_t i = 0; good && i < 5; i++) {
        const std::string &t = parts[i];
        good = !t.empty() && t.size() <= 18 && t.find_first_not_of("0123456789") == std::string::npos;
        v[i] = good ? std::stoll(t) : 0;
        good = good && v[i] > 0;
    }
    if (!good) return "expected N,L,S,E,H (positive integers), got '" + spec + "'";
    if (v[3] % v[4] != 0) {
        return "expected H dividing E, got E = " + std::to_string(v[3]) + ", H = " + std::to_string(v[4]) + " in '" +
               spec + "'";
    }
    return "";
}

// "N,L,S,E,H[;N,L,S,E,H...]" appended to `shapes`; false (with a message on
// stderr naming `tool`) for anything else.
inline bool parse_shapes(const char *tool, const std::string &arg, std::vector<Shape> &shapes) {
    for (const auto &spec : split(arg, ';')) {
        int64_t v[5];
        std::string why = shape_spec_error(spec, v);
        if (why.empty() && *std::max_element(v, v + 5) > std::numeric_limits<int>::max()) {
            why = "expected sizes below 2^31, got '" + spec + "'";
        }
        if (!why.empty()) {
            std::fprintf(stderr, "%s: --shapes: %s\n", tool, why.c_str());
            return false;
        }
        shapes.push_back(Shape{(int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4]});
    }
    return true;
}

// One shape of a build-time list (bench/gpu/CMakeLists.txt), known to parse.
inline Shape parse_shape(const char *spec) {
    std::vector<Shape> one;
    parse_shapes("parse_shape", spec, one);
    return one.at(0);
}

}  // namespace hmha_tune
