// The CPU tuner's second look at its winners (bench/tune/tune.cpp): a sweep of
// dozens of variants on a machine whose speed drifts picks, among variants
// that are really alike, the one that happened to run in a fast moment (on
// the 2-vCPU dev VM a variant's best of three rounds moved by +-17% within
// minutes). So the few best variants of the sweep are timed again in paired
// rounds, each against the defaults in the same round, and one is written
// only where it is faster than the defaults by more than a margin on the mean
// over the shape classes (the median ratio of each class's rounds) and slower
// by no more than the margin at any class; otherwise the defaults are.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace hmha_tune {

inline double median(std::vector<double> v) {
    if (v.empty()) return std::nan("");
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Confirmation {
    int chosen = -1;                  // index into the candidates; -1: keep the defaults
    std::vector<double> mean, worst;  // per candidate: over the classes, of its median paired ratio
};

// ratios[c][k]: candidate c's time over the defaults' time in the same round,
// one entry per round, at shape class k. A candidate with no rounds at a
// class, or any ratio not finite (a run that failed), cannot be chosen.
inline Confirmation confirm(const std::vector<std::vector<std::vector<double>>> &ratios, double margin) {
    Confirmation out;
    for (size_t c = 0; c < ratios.size(); c++) {
        double sum = 0.0, worst = 0.0;
        bool valid = !ratios[c].empty();
        for (const auto &rounds : ratios[c]) {
            const bool finite = std::all_of(rounds.begin(), rounds.end(), [](double r) { return std::isfinite(r); });
            if (rounds.empty() || !finite) {
                valid = false;
                break;
            }
            const double m = median(rounds);
            sum += m;
            worst = std::max(worst, m);
        }
        const double inf = std::numeric_limits<double>::infinity();
        out.mean.push_back(valid ? sum / (double)ratios[c].size() : inf);
        out.worst.push_back(valid ? worst : inf);
        const bool qualifies = valid && out.mean[c] < 1.0 - margin && out.worst[c] <= 1.0 + margin;
        if (qualifies && (out.chosen < 0 || out.mean[c] < out.mean[(size_t)out.chosen])) out.chosen = (int)c;
    }
    return out;
}

}  // namespace hmha_tune
