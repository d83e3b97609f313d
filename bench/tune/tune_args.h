// What the CPU tuner (bench/tune) and the GPU tuner (bench/gpu) share: the
// shape of an MHA case and the parsing of their --shapes and list arguments.
#pragma once

#include <cstdio>
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

// "N,L,S,E,H[;N,L,S,E,H...]" appended to `shapes`; false (with a message on
// stderr naming `tool`) for anything else.
inline bool parse_shapes(const char *tool, const std::string &arg, std::vector<Shape> &shapes) {
    for (const auto &spec : split(arg, ';')) {
        Shape s{};
        char rest = 0;
        if (split(spec, ',').size() != 5 ||
            std::sscanf(spec.c_str(), "%d,%d,%d,%d,%d%c", &s.N, &s.L, &s.S, &s.E, &s.H, &rest) != 5 || s.N < 1 ||
            s.L < 1 || s.S < 1 || s.H < 1 || s.E < 1 || s.E % s.H != 0) {
            std::fprintf(stderr, "%s: --shapes: expected N,L,S,E,H with positive sizes and E %% H == 0, got '%s'\n",
                         tool, spec.c_str());
            return false;
        }
        shapes.push_back(s);
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
