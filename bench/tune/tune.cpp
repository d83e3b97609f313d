// The schedule tuner: sweeps each CPU kernel's schedule GeneratorParams with
// Halide's JIT, times every variant on the shape classes below, and writes the
// winners to schedules/tuned/<name>.json, which the build reads (CMakeLists.txt,
// HMHA_TUNED_FILE) as the generators' PARAMS.
//
//   build/bench/tune/hmha_tune [--out schedules/tuned/host.json] [--quick]
//                              [--verbose] [--kernels sdpa,linear] [--shapes N,L,S,E,H[;N,L,S,E,H...]]
//                              [--variants "name=value name=value;name=value..."]
//                              [--confirm-rounds R] [--margin F] [--incumbent FILE|none]
//
// --kernels and --shapes narrow the sweep (to probe one kernel at one shape);
// the file written then holds only the kernels swept. --variants times those
// params (after the defaults) instead of the sweep; it may be given more than
// once, and every param must be one each kernel takes (checked before the
// sweep: a bad one ends the tuner with exit code 2 and a message naming the
// kernel, the param and the reason). --verbose prints every
// variant's time per shape. HMHA_TUNE_TARGET overrides the JIT target: with
// HMHA_TUNE_TARGET=host-profile every variant prints Halide's per-Func profile
// (where a kernel's time goes; those timings include the profiler's cost, and
// the file written names that target, so write it elsewhere with --out).
//
// One winner per kernel: the variant with the least mean time relative to the
// defaults over its shape classes (many short sequences, the MHA bench shape, a
// long sequence, each as one pass of the runtime calls it; sdpa is
// built three times, and tuned as `sdpa` on the long-key classes, `sdpa_rows`
// on short ones and `sdpa_short` on key counts long key blocks would pad:
// classes_for), so that each class counts alike, whatever its length.
// The untuned defaults (target-derived, schedules/cpu/defaults.h) are always in
// the sweep, so the sweep's winner is never slower than the untuned one on this
// mean. The sweep's best three, and the incumbent (the kernel's params in the
// --out file as it was, or in --incumbent FILE; none: without), are then
// timed again against the defaults in paired rounds (confirm.h;
// --confirm-rounds R, 0 to skip; --margin F), and the defaults are written
// unless one of them beats them by the margin.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "Halide.h"
#include "runtime/include/hmha/hmha.h"
#include "runtime/src/batch_passes.h"
#include "runtime/src/sdpa_classes.h"
#include "confirm.h"
#include "tune_args.h"

using namespace Halide;

namespace {

using hmha_tune::confirm;
using hmha_tune::Confirmation;
using hmha_tune::Shape;
using hmha_tune::split;

// The second look at a sweep's winners (confirm.h): this many of the best.
constexpr int kConfirmCandidates = 3;

using Params = std::map<std::string, std::string>;

Buffer<float> random_buffer(std::vector<int> extents, std::mt19937 &rng) {
    Buffer<float> b(extents);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    b.for_each_value([&](float &x) { x = nd(rng); });
    return b;
}

// A zero-stride view of a zero row, as the runtime passes absent masks.
template <typename T>
Buffer<T> zero_mask(const Buffer<T> &row, std::vector<int> extents) {
    std::vector<halide_dimension_t> dims{{0, row.dim(0).extent(), 1}};
    for (int e : extents) dims.push_back({0, e, 0});
    return Buffer<T>(const_cast<T *>(row.data()), (int)dims.size(), dims.data());
}

double time_ms(const std::function<void()> &run, int reps) {
    run();  // warm-up (and first-touch of outputs)
    std::vector<double> t;
    for (int i = 0; i < reps; i++) {
        auto t0 = std::chrono::steady_clock::now();
        run();
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// Shape classes (CMakeLists.txt, HMHA_CPU_CLASS_KERNELS): sdpa_short is the
// sdpa generator built again with shorter key blocks, with its class defaults;
// softmax_attend_mean_long and softmax_attend_long are softmax_attend_mean's
// and softmax_attend's generators with key chunks, for long key sequences;
// sdpa_rows is a generator of its own (generators/masked_softmax.cpp).
bool long_keys_class(const std::string &kernel) {
    return kernel == "softmax_attend_mean_long" || kernel == "softmax_attend_long";
}

std::string generator_of(const std::string &kernel) {
    if (kernel == "sdpa_short") return "sdpa";
    if (kernel == "softmax_attend_mean_long") return "softmax_attend_mean";
    if (kernel == "softmax_attend_long") return "softmax_attend";
    return kernel;
}

Params class_defaults(const std::string &kernel) {  // as CMakeLists.txt
    if (kernel == "sdpa_short") return {{"key_block", "128"}, {"query_block", "64"}};
    if (long_keys_class(kernel)) return {{"key_chunk", "512"}, {"query_block", "128"}};
    if (kernel == "sdpa_rows") return {{"query_block", "64"}};
    return {};
}

// Every kernel the tuner knows, in the order it tunes them by default.
const std::vector<std::string> kAllKernels{"linear",         "sdpa",          "sdpa_short", "sdpa_rows",
                                           "masked_softmax", "softmax_attend", "attend",     "softmax_attend_mean",
                                           "softmax_attend_mean_long", "softmax_attend_long", "head_mean"};

bool is_kernel(const std::string &k) {
    return std::find(kAllKernels.begin(), kAllKernels.end(), k) != kAllKernels.end();
}

// The message of an error a generator or Halide throws. Halide::Error is not
// a std::exception: a catch of std::exception alone let Halide's errors (an
// unknown GeneratorParam, a value out of its range, a schedule Halide
// rejects) end the tuner in std::terminate.
template <typename F>
std::string error_of(F &&f) {
    try {
        f();
    } catch (const Halide::Error &e) {
        return e.what();
    } catch (const std::exception &e) {
        return e.what();
    }
    return "";
}

std::string one_line(std::string m) {
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    for (char &c : m) {
        if (c == '\n') c = ' ';
    }
    return m;
}

// The generator of `kernel` with `params` set (the copy_values class choice
// first, for the shapes of `s`).
std::unique_ptr<Internal::AbstractGenerator> configured(const std::string &kernel, const Params &params,
                                                        const Shape &s, const Target &target) {
    auto gen = Internal::GeneratorRegistry::create(generator_of(kernel), GeneratorContext(target));
    // The kernels with _copy_v classes run as the runtime calls them at s: as
    // those where V's rows (E floats apart here) are far apart
    // (sdpa_classes.h), unless the variant names copy_values itself.
    const std::string g = generator_of(kernel);
    const bool has_copy_v_class = g == "sdpa" || g == "sdpa_rows" || g == "softmax_attend" || g == "softmax_attend_mean";
    if (has_copy_v_class && params.count("copy_values") == 0) {
        gen->set_generatorparam_value("copy_values", hmha::copy_values(s.E, s.L, s.S) ? "true" : "false");
    }
    for (const auto &[k, v] : params) gen->set_generatorparam_value(k, v);
    return gen;
}

// Builds `kernel` with `params` and binds inputs for `s`; returns a runner.
std::function<void()> build(const std::string &kernel, const Params &params, const Shape &s, const Target &target) {
    auto gen = configured(kernel, params, s, target);
    const std::string g = generator_of(kernel);
    Pipeline p = gen->build_pipeline();
    std::mt19937 rng(1);
    const int D = s.E / s.H;
    auto bind = [&](const std::string &name, const Buffer<> &b) { gen->input_parameter(name)[0].set_buffer(b); };
    Buffer<float> zf(std::max(s.S, 1));
    Buffer<uint8_t> zb(std::max(s.S, 1));
    zf.fill(0.0f);
    zb.fill(0);
    std::vector<Buffer<>> outputs;
    if (kernel == "linear") {
        bind("x", random_buffer({s.E, s.L * s.N}, rng));
        bind("weight_t", random_buffer({s.E, s.E}, rng));
        bind("bias", random_buffer({s.E}, rng));
        outputs.push_back(Buffer<float>(s.E, s.L * s.N));
    } else if (g == "sdpa" || g == "masked_softmax" || g == "softmax_attend" || g == "softmax_attend_mean" ||
               g == "sdpa_rows") {
        const bool sdpa = g == "sdpa" || g == "sdpa_rows";
        bind("q", random_buffer({D, s.H, s.L, s.N}, rng));
        bind("k", random_buffer({D, s.H, s.S, s.N}, rng));
        if (kernel != "masked_softmax") bind("v", random_buffer({D, s.H, s.S, s.N}, rng));
        bind("attn_mask", zero_mask(zf, {s.L, s.H, s.N}));
        bind("attn_mask_bool", zero_mask(zb, {s.L, s.H, s.N}));
        bind("key_padding", zero_mask(zf, {s.N}));
        gen->input_parameter("masked_keys")[0].set_scalar<int>(s.S);
        gen->input_parameter("causal")[0].set_scalar<bool>(false);
        gen->input_parameter("has_masks")[0].set_scalar<bool>(false);
        gen->input_parameter("scale")[0].set_scalar<float>(1.0f / std::sqrt((float)D));
        if (g == "softmax_attend_mean") {
            outputs.push_back(Buffer<float>(s.S, s.L, s.N));  // the weights' mean over heads
        } else if (!sdpa) {
            outputs.push_back(Buffer<float>(s.S, s.L, s.H, s.N));  // the weights
        }
        if (kernel != "masked_softmax") outputs.push_back(Buffer<float>(D, s.H, s.L, s.N));
    } else if (kernel == "head_mean") {
        bind("weights", random_buffer({s.S, s.L, s.H, s.N}, rng));
        outputs.push_back(Buffer<float>(s.S, s.L, s.N));
    } else if (kernel == "attend") {
        bind("weights", random_buffer({s.S, s.L, s.H, s.N}, rng));
        bind("v", random_buffer({D, s.H, s.S, s.N}, rng));
        outputs.push_back(Buffer<float>(D, s.H, s.L, s.N));
    }
    p.compile_jit(target);
    // The runner owns everything the pipeline reads and writes.
    auto keep = std::make_shared<std::tuple<decltype(gen), Buffer<float>, Buffer<uint8_t>, Realization>>(
        std::move(gen), zf, zb, Realization(outputs));
    return [p, keep, target]() mutable { p.realize(std::get<3>(*keep), target); };
}

std::vector<Params> sweep(const std::string &kernel, bool quick) {
    std::vector<Params> v{class_defaults(kernel)};  // the untuned defaults first
    auto add = [&](Params p) { v.push_back(std::move(p)); };
    if (kernel == "linear") {
        for (int to : quick ? std::vector<int>{48, 64} : std::vector<int>{32, 48, 64, 96})
            for (int tr : quick ? std::vector<int>{32} : std::vector<int>{16, 32, 64, 96})
                for (int ur : quick ? std::vector<int>{4} : std::vector<int>{2, 4, 6})
                    add({{"tile_o", std::to_string(to)}, {"tile_r", std::to_string(tr)}, {"unroll_r", std::to_string(ur)}});
    } else if (kernel == "sdpa" || kernel == "sdpa_short") {
        // score_tile_rows: queries per Q.K^T register tile (the default is 8
        // where there are 32 vector registers, 4 with 16, where 8 means 6-row
        // Q.K^T and P.V tiles in whole-tile query blocks; schedules/cpu/defaults.h, sdpa_tiles).
        // Key blocks of 64 (long class) and query blocks of 16 never won on the
        // dev VM; left out to keep the sweep near its old size with both heights.
        const bool long_keys = kernel == "sdpa";
        const std::vector<int> kbs = quick ? (long_keys ? std::vector<int>{128, 256} : std::vector<int>{64, 128})
                                           : (long_keys ? std::vector<int>{128, 256, 512} : std::vector<int>{32, 64, 128});
        const std::vector<int> qbs = quick ? std::vector<int>{long_keys ? 32 : 64} : std::vector<int>{32, 64, 128};
        for (int kb : kbs)
            for (int qb : qbs)
                for (int rows : quick ? std::vector<int>{0} : std::vector<int>{4, 8})  // 0: the target's default
                    add({{"key_block", std::to_string(kb)}, {"query_block", std::to_string(qb)},
                         {"score_tile_rows", std::to_string(rows)}});
    } else if (kernel == "head_mean") {
        for (int qb : quick ? std::vector<int>{4, 16} : std::vector<int>{1, 4, 16, 32, 64, 128})
            for (int kc : quick ? std::vector<int>{0, 64} : std::vector<int>{0, 16, 32, 64, 128})
                add({{"query_block", std::to_string(qb)}, {"key_chunk", std::to_string(kc)}});
    } else if (kernel == "sdpa_rows") {
        for (int qb : quick ? std::vector<int>{64, 128} : std::vector<int>{32, 64, 128})
            for (int rows : quick ? std::vector<int>{0} : std::vector<int>{4, 8})
                add({{"query_block", std::to_string(qb)}, {"score_tile_rows", std::to_string(rows)}});
    } else if (kernel == "softmax_attend_mean" || long_keys_class(kernel)) {
        const bool long_keys = long_keys_class(kernel);
        const std::vector<int> kcs = quick ? (long_keys ? std::vector<int>{512} : std::vector<int>{0, 256})
                                           : (long_keys ? std::vector<int>{256, 512, 1024} : std::vector<int>{0, 256, 512});
        for (int kc : kcs)
            for (int qb : quick ? std::vector<int>{64, 128} : std::vector<int>{32, 64, 128})
                add({{"key_chunk", std::to_string(kc)}, {"query_block", std::to_string(qb)}});
    } else {
        for (int qb : quick ? std::vector<int>{16, 64} : std::vector<int>{8, 16, 32, 64, 128})
            add({{"query_block", std::to_string(qb)}});
    }
    return v;
}

// The classes by the issue's shapes (and the classes' key counts).
std::vector<Shape> issue_classes_for(const std::string &kernel, bool quick) {
    const Shape short_keys{32, 128, 128, 256, 4}, shorter_keys{32, 128, 64, 256, 4}, bench{4, 512, 512, 512, 8},
        long_seq{1, 2048, 2048, 512, 8};
    if (quick) {
        if (kernel == "sdpa_short") return {Shape{1, 128, 1100, 256, 4}};
        if (kernel == "sdpa_rows") return {Shape{8, 128, 128, 256, 4}};
        if (long_keys_class(kernel)) return {Shape{1, 256, 1100, 512, 8}};
        return {Shape{4, 256, 256, 512, 8}};
    }
    // softmax_attend_mean_long and softmax_attend_long take
    // kSoftmaxAttendMeanLongKeys / kSoftmaxAttendLongKeys keys or more, in the
    // runtime's rounds of kWeightsQueryChunk queries; the plain classes fewer.
    const int64_t round = hmha::kWeightsQueryChunk;
    if (long_keys_class(kernel)) return {Shape{1, (int)round, 2048, 1024, 16}, Shape{1, (int)round, 4096, 512, 8}};
    if (kernel == "softmax_attend_mean" || kernel == "softmax_attend") {
        return {short_keys, bench, Shape{1, (int)round, 1000, 512, 8}};
    }
    // The online classes run past sdpa_rows' 1024 keys only (on the per-head
    // path as sdpa_kt and sdpa_kt_short, with these params).
    if (kernel == "sdpa") return {long_seq, Shape{1, 4096, 2048, 512, 8}};
    if (kernel == "sdpa_short") return {Shape{1, 512, 1100, 512, 8}, Shape{1, 1024, 1300, 512, 8}};
    if (kernel == "sdpa_rows") return {short_keys, shorter_keys, Shape{4, 256, 1000, 512, 8}};
    return {short_keys, bench, long_seq};
}

// A class as the runtime's kernels see it: one pass of batches of its
// Sequence path (runtime/src/batch_passes.h; 4 of the 32 batches at
// (32, 128, 128, 256, 4) on 2 threads, 1 of 4 at (4, 512, 512, 512, 8)). Tuned
// on whole shapes, the points of 2026-11-23 lost to the untuned defaults in
// the forward once it ran in passes (linear 64 x 64 x 6 against 64 x 32 x 4:
// 0.591 / 0.573 ms at 512 rows; the need_weights forward at
// (32, 128, 128, 256, 4) 15.4-16.0 ms tuned, 14.8-15.3 untuned).
Shape as_called(Shape s) {
    s.N = (int)std::min<int64_t>(s.N, hmha::auto_batch_chunk(s.L, s.S, s.E, hmha::kSequenceChunkBytesPerThread));
    return s;
}

// The shape classes a kernel is tuned on (as_called): sdpa on long key sequences,
// sdpa_rows on the short ones it takes (runtime/src/sdpa_classes.h: up to
// 1024 keys), sdpa_short on key counts that 512-key blocks would pad (past
// sdpa_rows' keys, and from 512 keys on the runtime's per-head path, whose
// sdpa_kt_short takes sdpa_short's params), the others on all.
std::vector<Shape> classes_for(const std::string &kernel, bool quick) {
    std::vector<Shape> c = issue_classes_for(kernel, quick);
    for (Shape &s : c) s = as_called(s);
    return c;
}

std::string describe(const Params &p) {
    if (p.empty()) return "(defaults)";
    std::string s;
    for (const auto &[k, v] : p) s += (s.empty() ? "" : " ") + k + "=" + v;
    return s;
}

void progress(int done, int total, const std::string &what) {
    const int width = 30, filled = total ? done * width / total : width;
    std::fprintf(stderr, "\r[%s%s] %3d/%d %-60.60s", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), done, total, what.c_str());
    std::fflush(stderr);
}

// A variant of `kernel` that failed at shape s (`how`: "does not compile" or
// "fails when run"), over the progress bar.
void report_failure(const std::string &kernel, const Params &p, const Shape &s, const char *how,
                    const std::string &why) {
    std::fprintf(stderr, "\r%-80s\rhmha_tune: %s %s at %s: %s: %s\n", "", kernel.c_str(), describe(p).c_str(),
                 s.name().c_str(), how, one_line(why).c_str());
}

// --variants "key_block=512 query_block=64;key_block=256": each variant's
// GeneratorParams as name=value words; false (with a message) for anything else.
bool parse_variants(const std::string &arg, std::vector<Params> &out) {
    for (const auto &spec : split(arg, ';')) {
        Params p;
        for (const auto &word : split(spec, ' ')) {
            if (word.empty()) continue;
            const size_t eq = word.find('=');
            if (eq == std::string::npos || eq == 0 || eq + 1 == word.size()) {
                std::fprintf(stderr, "hmha_tune: --variants: expected name=value, got '%s'\n", word.c_str());
                return false;
            }
            p[word.substr(0, eq)] = word.substr(eq + 1);
        }
        if (p.empty()) {
            std::fprintf(stderr, "hmha_tune: --variants: empty variant in '%s'\n", arg.c_str());
            return false;
        }
        out.push_back(std::move(p));
    }
    return true;
}

// A tuned file's params per kernel (the JSON this tuner writes) into `out`.
// False with `why` empty where the file does not exist, with a reason where
// it cannot be read as one.
bool read_tuned_file(const std::string &path, std::map<std::string, Params> &out, std::string &why) {
    std::ifstream in(path);
    if (!in) return false;
    try {
        const nlohmann::json j = nlohmann::json::parse(in);
        const nlohmann::json &kernels = j.at("kernels");
        if (!kernels.is_object()) throw std::runtime_error("\"kernels\" is not an object");
        for (const auto &[kernel, params] : kernels.items()) {
            if (!params.is_object()) throw std::runtime_error("\"" + kernel + "\" is not an object");
            Params p;
            for (const auto &[k, v] : params.items()) {
                if (v.is_structured() || v.is_null()) throw std::runtime_error(kernel + "." + k + " is not a value");
                p[k] = v.is_string() ? v.get<std::string>() : v.dump();
            }
            out[kernel] = p;
        }
    } catch (const std::exception &e) {
        why = path + ": expected a tuned file ({\"target\": ..., \"kernels\": {kernel: {param: value}}}): " +
              one_line(e.what());
        return false;
    }
    return true;
}

// A number in [lo, hi] (whole where `integer`) from `arg`; false with a
// message naming the option, the range and the value for anything else.
bool parse_number(const char *option, const std::string &arg, double lo, double hi, bool integer, double &out) {
    char *end = nullptr;
    const double v = std::strtod(arg.c_str(), &end);
    if (arg.empty() || *end != '\0' || !(v >= lo && v <= hi) || (integer && v != std::floor(v))) {
        std::fprintf(stderr, "hmha_tune: %s: expected %s from %g to %g, got '%s'\n", option,
                     integer ? "a whole number" : "a number", lo, hi, arg.c_str());
        return false;
    }
    out = v;
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    std::string out = "schedules/tuned/host.json";
    bool quick = false, verbose = false;
    std::vector<std::string> kernels = kAllKernels;
    std::vector<Shape> shapes;  // --shapes: every kernel on these instead of its classes
    std::vector<Params> variants_arg;  // --variants: these after the defaults instead of the sweep
    double confirm_rounds_arg = -1.0;  // --confirm-rounds; -1: 5, or 3 with --quick
    double margin = 0.04;              // --margin
    std::string incumbent_file;        // --incumbent; empty: the --out file
    auto usage = [] {
        std::fprintf(stderr, "usage: hmha_tune [--out FILE] [--quick] [--verbose] [--kernels K,K...] [--shapes N,L,S,E,H;...]\n"
                             "                [--variants \"k=v k=v;k=v...\"] [--confirm-rounds R] [--margin F]\n"
                             "                [--incumbent FILE|none]\n");
        return 2;
    };
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--out" && i + 1 < argc) {
            out = argv[++i];
        } else if (a == "--quick") {
            quick = true;
        } else if (a == "--verbose") {
            verbose = true;
        } else if (a == "--kernels" && i + 1 < argc) {
            kernels = split(argv[++i], ',');
            for (const auto &k : kernels) {
                if (!is_kernel(k)) {
                    std::string known;
                    for (const auto &name : kAllKernels) known += (known.empty() ? "" : ", ") + name;
                    std::fprintf(stderr, "hmha_tune: --kernels: unknown kernel '%s' (expected one of %s)\n",
                                 k.c_str(), known.c_str());
                    return 2;
                }
            }
        } else if (a == "--shapes" && i + 1 < argc) {
            if (!hmha_tune::parse_shapes("hmha_tune", argv[++i], shapes)) return 2;
        } else if (a == "--variants" && i + 1 < argc) {
            if (!parse_variants(argv[++i], variants_arg)) return 2;
        } else if (a == "--confirm-rounds" && i + 1 < argc) {
            if (!parse_number("--confirm-rounds", argv[++i], 0.0, 100.0, true, confirm_rounds_arg)) return 2;
        } else if (a == "--incumbent" && i + 1 < argc) {
            incumbent_file = argv[++i];
        } else if (a == "--margin" && i + 1 < argc) {
            if (!parse_number("--margin", argv[++i], 0.0, 0.5, false, margin)) return 2;
        } else {
            return usage();
        }
    }
    const int confirm_rounds = confirm_rounds_arg < 0.0 ? (quick ? 3 : 5) : (int)confirm_rounds_arg;
    std::map<std::string, Params> incumbent;
    if (incumbent_file != "none") {
        const std::string path = incumbent_file.empty() ? out : incumbent_file;
        std::string why;
        if (!read_tuned_file(path, incumbent, why) && !(incumbent_file.empty() && why.empty())) {
            std::fprintf(stderr, "hmha_tune: incumbent: %s (--incumbent none: go without)\n",
                         why.empty() ? ("cannot read " + path).c_str() : why.c_str());
            return 2;
        }
    }
    auto sweep_of = [&](const std::string &k) {
        if (variants_arg.empty()) return sweep(k, quick);
        std::vector<Params> v{class_defaults(k)};
        v.insert(v.end(), variants_arg.begin(), variants_arg.end());
        return v;
    };
    Target target;
    if (const std::string err = error_of([&] {
            const char *target_env = std::getenv("HMHA_TUNE_TARGET");
            target = target_env ? Target(target_env) : get_host_target();
        });
        !err.empty()) {
        std::fprintf(stderr, "hmha_tune: HMHA_TUNE_TARGET: %s\n", one_line(err).c_str());
        return 2;
    }
    // Every --variants param must be one each kernel takes, with a value it
    // accepts (its generator builds with it alone): checked before the sweep,
    // not after minutes of it.
    for (const auto &k : kernels) {
        for (const Params &p : variants_arg) {
            for (const auto &[name, value] : p) {
                const std::string err =
                    error_of([&] { configured(k, {{name, value}}, Shape{1, 1, 1, 1, 1}, target)->build_pipeline(); });
                if (!err.empty()) {
                    std::fprintf(stderr, "hmha_tune: --variants: %s does not take %s=%s: %s\n", k.c_str(),
                                 name.c_str(), value.c_str(), one_line(err).c_str());
                    return 2;
                }
            }
        }
    }
    auto classes_of = [&](const std::string &k) { return shapes.empty() ? classes_for(k, quick) : shapes; };
    int total = 0, done = 0;
    for (const auto &k : kernels) total += (int)sweep_of(k).size() * (int)classes_of(k).size();

    std::string json = "{\n  \"target\": \"" + target.to_string() + "\",\n  \"kernels\": {\n";
    std::string table;
    for (size_t ki = 0; ki < kernels.size(); ki++) {
        const std::string &kernel = kernels[ki];
        // Compile every variant for a shape, then time them round-robin and keep
        // each one's best round: a burst of load elsewhere then hits all alike.
        std::vector<Params> variants = sweep_of(kernel);
        // Each variant's summed time, and its mean and worst time relative to
        // the defaults' (variants[0]) per class: the winner has the least
        // mean, so that every class counts alike (by summed time the long
        // class decided alone, and the short classes' points lost up to 4% to
        // the defaults: softmax_attend_mean at (4, 128, 128, 256, 4)).
        std::vector<double> sum(variants.size(), 0.0), rel(variants.size(), 0.0), worst(variants.size(), 0.0);
        const std::vector<Shape> classes = classes_of(kernel);
        std::string class_names;
        for (const Shape &s : classes) class_names += (class_names.empty() ? "" : " ") + s.name();
        for (const Shape &s : classes) {
            // A variant that does not compile (a schedule Halide or the
            // generator rejects) or fails when run is reported and left out;
            // the defaults must compile and run.
            std::vector<std::function<void()>> runs;
            auto left_out = [&](size_t i, const char *how, const std::string &why) {
                report_failure(kernel, variants[i], s, how, why);
                if (i == 0) {
                    std::fprintf(stderr, "hmha_tune: %s: its defaults must compile and run; nothing written\n",
                                 kernel.c_str());
                    std::exit(1);
                }
                runs[i] = nullptr;
            };
            for (size_t i = 0; i < variants.size(); i++) {
                progress(done++, total, kernel + " " + describe(variants[i]) + " " + s.name());
                runs.emplace_back();
                const std::string err = error_of([&] { runs[i] = build(kernel, variants[i], s, target); });
                if (!err.empty()) left_out(i, "does not compile", err);
            }
            const double failed = std::numeric_limits<double>::infinity();
            std::vector<double> best_round(variants.size(), failed);
            for (int round = 0; round < 3; round++) {
                for (size_t i = 0; i < runs.size(); i++) {
                    if (!runs[i]) continue;
                    double ms = failed;
                    const std::string err = error_of([&] { ms = time_ms(runs[i], quick ? 3 : 5); });
                    if (!err.empty()) {
                        left_out(i, "fails when run", err);
                        best_round[i] = failed;
                    } else {
                        best_round[i] = std::min(best_round[i], ms);
                    }
                }
            }
            for (size_t i = 0; i < variants.size(); i++) {
                sum[i] += best_round[i];
                rel[i] += best_round[i] / best_round[0] / (double)classes.size();
                worst[i] = std::max(worst[i], best_round[i] / best_round[0]);
                if (verbose) {
                    std::fprintf(stderr, "\r%-80s\r", "");
                    if (best_round[i] == failed) {
                        std::printf("  %-15s %-22s %-45s %12s\n", kernel.c_str(), s.name().c_str(),
                                    describe(variants[i]).c_str(), "left out");
                    } else {
                        std::printf("  %-15s %-22s %-45s %9.3f ms\n", kernel.c_str(), s.name().c_str(),
                                    describe(variants[i]).c_str(), best_round[i]);
                    }
                }
            }
        }
        size_t w = std::min_element(rel.begin(), rel.end()) - rel.begin();
        const double best = sum[w], base = sum[0];
        char line[768];
        std::snprintf(line, sizeof(line),
                      "%-15s %-45s %9.2f ms (defaults %9.2f ms, %.2fx; per class %.3f of the defaults' time on "
                      "average, %.3f at worst) over %s\n",
                      kernel.c_str(), describe(variants[w]).c_str(), best, base, base / best, rel[w], worst[w],
                      class_names.c_str());
        table += line;
        // The second look (confirm.h): the sweep's best few, each timed
        // against the defaults in paired rounds; the defaults win unless one
        // beats them by the margin.
        std::vector<size_t> candidates;
        for (size_t i = 1; i < variants.size(); i++) {
            if (rel[i] < 1.0) candidates.push_back(i);
        }
        std::sort(candidates.begin(), candidates.end(), [&](size_t a, size_t b) { return rel[a] < rel[b]; });
        if (candidates.size() > (size_t)kConfirmCandidates) candidates.resize(kConfirmCandidates);
        // The incumbent (the params the file held before) is looked at too,
        // however it fared in the sweep: one slow moment there must not
        // replace params an earlier run confirmed.
        size_t incumbent_at = variants.size();
        if (const auto it = incumbent.find(kernel); it != incumbent.end() && confirm_rounds > 0) {
            Params p = class_defaults(kernel);
            for (const auto &[k, v] : it->second) p[k] = v;
            const auto known = std::find(variants.begin(), variants.end(), p);
            incumbent_at = (size_t)(known - variants.begin());
            if (known == variants.end()) variants.push_back(p);
            if (incumbent_at != 0 && std::find(candidates.begin(), candidates.end(), incumbent_at) == candidates.end()) {
                candidates.push_back(incumbent_at);
            }
        }
        if (confirm_rounds == 0) {
            // --confirm-rounds 0: the sweep's winner as it stands.
        } else if (candidates.empty()) {
            w = 0;
            table += "  no variant beat the defaults in the sweep: the defaults are written\n";
        } else {
            std::vector<std::vector<std::vector<double>>> ratios(candidates.size());
            for (const Shape &s : classes) {
                progress(done, total, kernel + ": confirming at " + s.name());
                std::vector<std::function<void()>> runs{build(kernel, variants[0], s, target)};
                for (size_t c : candidates) {
                    std::function<void()> run;
                    if (const std::string err = error_of([&] { run = build(kernel, variants[c], s, target); });
                        !err.empty()) {
                        report_failure(kernel, variants[c], s, "does not compile", err);
                    }
                    runs.push_back(run);
                }
                for (auto &r : ratios) r.emplace_back();
                for (int round = 0; round < confirm_rounds; round++) {
                    // Each round starts with a different variant, so none always follows another.
                    std::vector<double> ms(runs.size(), std::numeric_limits<double>::infinity());
                    for (size_t step = 0; step < runs.size(); step++) {
                        const size_t i = (step + (size_t)round) % runs.size();
                        if (runs[i]) error_of([&] { ms[i] = time_ms(runs[i], quick ? 3 : 5); });
                    }
                    for (size_t c = 0; c < candidates.size(); c++) ratios[c].back().push_back(ms[c + 1] / ms[0]);
                }
                if (verbose) {
                    std::fprintf(stderr, "\r%-80s\r", "");
                    for (size_t c = 0; c < candidates.size(); c++) {
                        std::printf("  %-15s %-22s %-45s %9.3f of the defaults (median paired ratio)\n",
                                    kernel.c_str(), s.name().c_str(), describe(variants[candidates[c]]).c_str(),
                                    hmha_tune::median(ratios[c].back()));
                    }
                }
            }
            const Confirmation conf = confirm(ratios, margin);
            for (size_t c = 0; c < candidates.size(); c++) {
                std::snprintf(line, sizeof(line),
                              "  confirm %-45s %.3f of the defaults' time on average, %.3f at worst (median of %d "
                              "paired rounds per class%s)%s\n",
                              describe(variants[candidates[c]]).c_str(), conf.mean[c], conf.worst[c], confirm_rounds,
                              candidates[c] == incumbent_at ? ", the incumbent" : "",
                              (int)c == conf.chosen ? ": written" : "");
                table += line;
            }
            w = conf.chosen < 0 ? 0 : candidates[(size_t)conf.chosen];
            if (conf.chosen < 0) {
                std::snprintf(line, sizeof(line),
                              "  none faster than the defaults by %.0f%% on average and slower by at most that at "
                              "every class: the defaults are written\n",
                              100.0 * margin);
                table += line;
            }
        }
        const Params winner = variants[w];
        json += "    \"" + kernel + "\": {";
        bool first = true;
        for (const auto &[k, v] : winner) json += std::string(first ? "" : ", ") + "\"" + k + "\": " + v, first = false;
        json += std::string("}") + (ki + 1 < kernels.size() ? "," : "") + "\n";
    }
    json += "  }\n}\n";
    progress(total, total, "done");
    std::fprintf(stderr, "\n");
    std::printf("target %s; each kernel's time summed over its shape classes\n%s", target.to_string().c_str(),
                table.c_str());
    std::ofstream(out) << json;
    std::printf("wrote %s\n", out.c_str());
    return 0;
}
