// The CPU kernels of a dispatch build (an HMHA_TARGETS CPU entry with several
// comma-separated targets: the x86-64 default) hold one variant per target.
// On its first call each kernel asks the Halide runtime's
// halide_can_use_target_features about each variant but the last and keeps,
// for good, the first one in list order (most specific first) that is
// allowed, else the last, the baseline. This program answers those questions itself
// (halide_set_custom_can_use_target_features, installed before any kernel
// runs): it records every question and answers as Halide's default would,
// except that it refuses any variant with a feature named by --deny. Then it
// runs forward over configurations that reach every kernel it counts, checks them
// against the float64 reference (tests/reference.h), and checks the variant
// each kernel chose:
//
//   hmha_cpu_dispatch [--deny=FEATURE,...] [--expect=LEVEL]
//
// FEATURE is a Halide feature name (avx512_zen4, avx512_skylake, avx512, avx2,
// ...). LEVEL is one of baseline < avx2 < avx512_skylake < avx512_zen4, the
// variants of HMHA_X86_64_DISPATCH_TARGETS: every kernel must choose it, or,
// where this CPU cannot run it (judged from CPUID here, not by asking
// Halide), the best level below it that the CPU can run
// and --deny allows. Without --expect only the consistency checks apply.
// Exit status 0 on success, 1 on a failure (each one printed).
#include <cpuid.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "HalideRuntime.h"
#include "hmha/hmha.h"
#include "reference.h"
#include "sdpa_class_keys.h"

namespace {

struct Question {
    std::vector<uint64_t> mask;
    int answer;
};

std::vector<Question> g_questions;
std::set<int> g_denied;  // halide_target_feature_t values

bool has(const std::vector<uint64_t> &mask, int feature) {
    return feature / 64 < (int)mask.size() && (mask[feature / 64] >> (feature % 64)) & 1;
}

extern "C" int recording_can_use(int count, const uint64_t *features) {
    std::vector<uint64_t> mask(features, features + count);
    int answer = 1;
    for (int f : g_denied) {
        if (has(mask, f)) answer = 0;
    }
    if (answer) answer = halide_default_can_use_target_features(count, features);
    g_questions.push_back({mask, answer});
    return answer;
}

const std::map<std::string, int> kFeatures{
    {"sse41", halide_target_feature_sse41},
    {"avx", halide_target_feature_avx},
    {"avx2", halide_target_feature_avx2},
    {"fma", halide_target_feature_fma},
    {"f16c", halide_target_feature_f16c},
    {"avx512", halide_target_feature_avx512},
    {"avx512_skylake", halide_target_feature_avx512_skylake},
    {"avx512_cannonlake", halide_target_feature_avx512_cannonlake},
    {"avx512_zen4", halide_target_feature_avx512_zen4},
    {"avx512_sapphirerapids", halide_target_feature_avx512_sapphirerapids},
};

// The dispatch levels, lowest first; a variant's level is its most specific feature.
const std::vector<std::string> kLevels{"baseline", "avx2", "avx512_skylake", "avx512_zen4"};

std::string level_of(const std::vector<uint64_t> &mask) {
    if (has(mask, halide_target_feature_avx512_zen4)) return "avx512_zen4";
    if (has(mask, halide_target_feature_avx512_skylake)) return "avx512_skylake";
    if (has(mask, halide_target_feature_avx2)) return "avx2";
    return "baseline";
}

int level_index(const std::string &level) {
    for (size_t i = 0; i < kLevels.size(); i++) {
        if (kLevels[i] == level) return (int)i;
    }
    return -1;
}

// What a level needs, read from CPUID here rather than asked of Halide. As in
// Halide's own check, AVX2 counts only with AVX, F16C and RDRAND, and the Zen 4
// variant needs the Cannon Lake set (IFMA, VBMI) on top of Skylake's; its other
// features are no vector ISA extensions a float kernel uses.
bool cpu_can_run(const std::string &level) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return level == "baseline";
    const bool sse41 = c & (1u << 19), fma = c & (1u << 12), avx = c & (1u << 28), f16c = c & (1u << 29),
               rdrand = c & (1u << 30);
    unsigned b7 = 0, c7 = 0;
    if (__get_cpuid_max(0, nullptr) >= 7) __cpuid_count(7, 0, a, b7, c7, d);
    const bool avx2 = avx && f16c && rdrand && fma && (b7 & (1u << 5));
    const unsigned skylake_bits = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);  // F DQ CD BW VL
    const bool skylake = avx2 && (b7 & skylake_bits) == skylake_bits;
    const bool cannonlake = skylake && (b7 & (1u << 21)) && (c7 & (1u << 1));  // IFMA, VBMI
    if (level == "baseline") return sse41;
    if (level == "avx2") return avx2;
    if (level == "avx512_skylake") return skylake;
    if (level == "avx512_zen4") return cannonlake;
    return false;
}

// The features of each level's variant in HMHA_X86_64_DISPATCH_TARGETS.
std::vector<int> features_of(const std::string &level) {
    std::vector<int> f{halide_target_feature_sse41};
    if (level_index(level) >= level_index("avx2")) {
        f.insert(f.end(), {halide_target_feature_avx, halide_target_feature_avx2, halide_target_feature_f16c,
                           halide_target_feature_fma});
    }
    if (level_index(level) >= level_index("avx512_skylake")) {
        f.insert(f.end(), {halide_target_feature_avx512, halide_target_feature_avx512_skylake});
    }
    if (level_index(level) >= level_index("avx512_zen4")) {
        f.insert(f.end(), {halide_target_feature_avx512_cannonlake, halide_target_feature_avx512_zen4});
    }
    return f;
}

// The baseline is taken without asking, so it cannot be denied.
bool denied(const std::string &level) {
    if (level == "baseline") return false;
    for (int f : features_of(level)) {
        if (g_denied.count(f)) return true;
    }
    return false;
}

int g_failures = 0;

void fail(const std::string &what) {
    std::printf("FAILED: %s\n", what.c_str());
    g_failures++;
}

// Forward with need_weights false (linear, sdpa) and true (linear, then
// softmax_attend_mean averaging or softmax_attend per head) against the
// reference; odd sizes for the vector tails, a key_padding_mask and a causal case.
void run_cases() {
    struct Case {
        int64_t E, H, L, S, N;
        bool need_weights, average, causal, pad;
        int64_t kdim = 0;  // Options::kdim and vdim (0: E)
    };
    const Case cases[] = {
        {64, 4, 37, 53, 2, false, true, false, true},
        {64, 4, 37, 53, 2, true, true, false, true},
        {48, 3, 29, 29, 3, true, false, true, false},  // causal: L == S
        {48, 3, 29, 29, 3, false, true, true, false},
        {8, 2, 5, 7, 1, true, true, false, true},
        // V's rows 520 floats apart: the _copy_v classes of sdpa_rows,
        // softmax_attend_mean and softmax_attend (sdpa_classes.h).
        {520, 8, 21, 19, 2, false, true, false, true},
        {520, 8, 21, 19, 2, true, true, false, true},
        {520, 8, 21, 19, 2, true, false, false, true},
        // And past kSdpaRowsMaxKeys: sdpa_short_copy_v, then sdpa_copy_v
        // (sdpa_class_keys.h). Keys and values of 8 features keep the
        // reference's projections cheap; projected, V's rows are still E
        // floats apart.
        {520, 8, 17, kShortClassKeys, 1, false, true, false, true, 8},
        {520, 8, 17, kLongClassKeys, 1, false, true, false, true, 8},
        // Averaged weights over kSoftmaxAttendMeanLongKeys keys or more:
        // softmax_attend_mean_long, then its _copy_v twin.
        {64, 4, 5, hmha::kSoftmaxAttendMeanLongKeys + 6, 1, true, true, false, true, 8},
        {520, 8, 17, hmha::kSoftmaxAttendMeanLongKeys + 6, 1, true, true, false, true, 8},
        // Per-head weights over kSoftmaxAttendLongKeys keys or more:
        // softmax_attend_long, then its _copy_v twin.
        {64, 4, 5, hmha::kSoftmaxAttendLongKeys + 6, 1, true, false, false, true, 8},
        {520, 8, 17, hmha::kSoftmaxAttendLongKeys + 6, 1, true, false, false, true, 8},
    };
    static_assert(hmha::use_short_key_block(kShortClassKeys, HMHA_SDPA_KEY_BLOCK, HMHA_SDPA_SHORT_KEY_BLOCK) &&
                  !hmha::use_short_key_block(kLongClassKeys, HMHA_SDPA_KEY_BLOCK, HMHA_SDPA_SHORT_KEY_BLOCK) &&
                  !hmha::use_rows(kShortClassKeys) && !hmha::use_rows(kLongClassKeys));
    uint32_t seed = 1;
    for (const Case &c : cases) {
        std::mt19937 rng(seed++);
        hmha::Options o;
        o.embed_dim = c.E;
        o.num_heads = c.H;
        o.kdim = o.vdim = c.kdim;
        const int64_t kv_features = c.kdim ? c.kdim : c.E;
        const auto sd = random_state_dict(o, rng);
        const hmha::Tensor q = random_tensor({c.L, c.N, c.E}, rng);
        const hmha::Tensor k = random_tensor({c.S, c.N, kv_features}, rng);
        const hmha::Tensor v = random_tensor({c.S, c.N, kv_features}, rng);
        hmha::ForwardOptions fo;
        fo.need_weights = c.need_weights;
        fo.average_attn_weights = c.average;
        fo.is_causal = c.causal;
        if (c.pad) {
            std::vector<uint8_t> pad((size_t)(c.N * c.S), 0);
            for (int64_t n = 0; n < c.N; n++) {
                for (int64_t j = c.S - 1 - n; j < c.S; j++) pad[(size_t)(n * c.S + j)] = 1;
            }
            fo.key_padding_mask = hmha::Tensor::from_bools({c.N, c.S}, pad);
        }
        const std::string what = "E=" + std::to_string(c.E) + " H=" + std::to_string(c.H) + " L=" +
                                 std::to_string(c.L) + " S=" + std::to_string(c.S) + " N=" + std::to_string(c.N) +
                                 " need_weights=" + std::to_string(c.need_weights);
        try {
            hmha::MultiheadAttention mha(o, sd);
            const hmha::ForwardResult got = mha.forward(q, k, v, fo);
            const RefResult ref = reference_forward(o, sd, q, k, v, fo);
            const std::string out = compare_to_reference(got.attn_output, ref.out_shape, ref.out);
            if (!out.empty()) fail(what + ": attn_output differs from the float64 reference: " + out);
            if (got.attn_output_weights.has_value() != ref.has_weights) {
                fail(what + ": attn_output_weights present=" + std::to_string(got.attn_output_weights.has_value()));
            } else if (ref.has_weights) {
                const std::string w = compare_to_reference(*got.attn_output_weights, ref.w_shape, ref.weights);
                if (!w.empty()) fail(what + ": attn_output_weights differ from the float64 reference: " + w);
            }
        } catch (const std::exception &e) {
            fail(what + ": forward threw: " + e.what());
        }
    }
}

}  // namespace

int main(int argc, char **argv) {
    std::string expect;
    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        if (arg.rfind("--deny=", 0) == 0) {
            std::string list = arg.substr(7);
            size_t at = 0;
            while (at <= list.size()) {
                size_t comma = list.find(',', at);
                if (comma == std::string::npos) comma = list.size();
                const std::string name = list.substr(at, comma - at);
                if (!kFeatures.count(name)) {
                    std::fprintf(stderr, "hmha_cpu_dispatch: unknown feature '%s'\n", name.c_str());
                    return 2;
                }
                g_denied.insert(kFeatures.at(name));
                at = comma + 1;
            }
        } else if (arg.rfind("--expect=", 0) == 0) {
            expect = arg.substr(9);
            if (level_index(expect) < 0) {
                std::fprintf(stderr, "hmha_cpu_dispatch: unknown level '%s'\n", expect.c_str());
                return 2;
            }
        } else {
            std::fprintf(stderr, "usage: hmha_cpu_dispatch [--deny=FEATURE,...] [--expect=LEVEL]\n");
            return 2;
        }
    }

    // Before any kernel runs: each kernel asks once and keeps its choice.
    halide_set_custom_can_use_target_features(recording_can_use);
    run_cases();

    // The questions, per kernel: on its first call a kernel asks about every
    // variant but the baseline (Halide evaluates all the conditions, then
    // takes the first variant in list order whose answer was yes, else the
    // baseline), so they come in blocks of one question per variant.
    if (g_questions.empty()) {
        fail("no kernel asked halide_can_use_target_features: the CPU kernels are not a dispatch build");
        return 1;
    }
    std::set<std::vector<uint64_t>> variants;
    for (const Question &q : g_questions) variants.insert(q.mask);
    const size_t k = variants.size();
    std::printf("%zu questions; %zu variants besides the baseline\n", g_questions.size(), k);
    if (g_questions.size() % k != 0) fail("the questions do not split into one block per kernel");
    std::vector<std::vector<Question>> kernels;
    for (size_t i = 0; i + k <= g_questions.size(); i += k) {
        kernels.emplace_back(g_questions.begin() + (long)i, g_questions.begin() + (long)(i + k));
    }

    // The list is most specific first, so the variant chosen is the allowed one
    // of the highest level.
    std::set<std::string> chosen;
    for (size_t i = 0; i < kernels.size(); i++) {
        std::string line, choice = "baseline";
        std::set<std::vector<uint64_t>> asked;
        for (const Question &q : kernels[i]) {
            asked.insert(q.mask);
            line.append(" ").append(level_of(q.mask)).append(q.answer ? "=yes" : "=no");
            if (q.answer && level_index(level_of(q.mask)) > level_index(choice)) choice = level_of(q.mask);
            for (int f : g_denied) {
                if (has(q.mask, f) && q.answer) fail("a variant with a denied feature was allowed");
            }
        }
        if (asked.size() != k) fail("kernel " + std::to_string(i + 1) + " did not ask about every variant once");
        std::printf("kernel %zu:%s -> %s\n", i + 1, line.c_str(), choice.c_str());
        chosen.insert(choice);
    }
    // linear, sdpa_rows, softmax_attend_mean, softmax_attend, their three
    // _copy_v classes, sdpa_short_copy_v, sdpa_copy_v, softmax_attend_mean_long,
    // softmax_attend_long and their _copy_v twins: each asks once per process.
    if (kernels.size() != 13) fail("expected 13 kernels to ask once each, got " + std::to_string(kernels.size()));
    if (chosen.size() != 1) fail("the kernels chose different variants");

    if (!expect.empty() && chosen.size() == 1) {
        std::string want = expect;
        while (want != "baseline" && (!cpu_can_run(want) || denied(want))) want = kLevels[level_index(want) - 1];
        if (want != expect) std::printf("note: this CPU cannot run %s (or it is denied); expecting %s\n",
                                        expect.c_str(), want.c_str());
        if (*chosen.begin() != want) fail("chose " + *chosen.begin() + ", expected " + want);
    }
    if (g_failures == 0) std::printf("OK: every kernel ran the %s variant and matched the reference\n", chosen.begin()->c_str());
    return g_failures == 0 ? 0 : 1;
}
