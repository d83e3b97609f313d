// The GPU schedule tuner: times every ahead-of-time variant of each GPU kernel
// (bench/gpu/CMakeLists.txt, HMHA_GPU_TUNE=ON) on one device and writes the
// winners to a JSON file that the build reads as that family's params.
//
//   hmha_gpu_tune --device cuda|opencl [--out schedules/tuned/cuda.json] [--quick]
//                 [--verbose] [--shapes N,L,S,E,H[;...]] [--times FILE]
//                 [--peers with|none|only] [--kernels K[,K...]] [--list-peers]
//                 [--match TEXT[;TEXT...]] [--deadline SECONDS]
//
// --times writes every timed (kernel, shape, variant) as one JSON line (ms: the
// best round's median; valid: false for a variant that failed a check), for
// bench/gpu/compare.py, each kernel's lines as soon as its sweep ends.
//
// --deadline: seconds from the start after which no further (kernel, shape)
// starts: a device's time is lent in slices (bench/gpu/run.sh), and a sweep
// killed by a timeout would leave nothing. A kernel the deadline cut short
// (a shape, or sdpa's head_dim-128 check, not run) gets no winner in --out;
// its timed lines stay in --times with "complete": false. The listing and
// the summary say which kernels were cut, and each kernel's seconds.
//
// Every variant's output is checked against the CPU kernel's on the same
// inputs before it is timed; a variant that fails (a launch the device refuses,
// shared memory it lacks; sdpa is also run at head_dim 128, and with --quick
// at head_dim 64, causal too) or differs is
// reported and never wins. Times are the
// median of repeated calls, each waited for with a device sync; variants run
// round-robin, 3 rounds, and keep their best round. The untuned defaults are
// the first variant of every kernel, so the winner is never slower than them
// on the summed time. Autoscheduled variants (HMHA_GPU_AS_SHAPES: the same
// generators scheduled by Anderson2021 for one shape) are checked and timed the
// same way at that shape, as peers: reported beside the winner, never chosen.
//
// A kernel that faults on a CUDA device (an illegal address, say) leaves the
// process's context unusable: every later launch fails at once. So a call
// that fails while timed marks its variant failed (never a time), and
// bench/gpu/run.sh runs our variants (--peers none) and each autoscheduled
// one (--peers only --kernels K --shapes S, as --list-peers names them) in
// processes of their own: on the H100 on 2026-11-27 Anderson2021's sdpa for
// (1, 4096, 4096, 512, 8) faulted, and the sweep's later times were those of
// failing launches. --match keeps the untuned defaults and the variants
// whose params contain one of the texts (a short re-run of a few candidates).
//
// CUDA: every kernel is JIT-compiled under one register cap, the runtime's
// (runtime/src/cuda_driver_hooks.h: HMHA_CUDA_MAX_REGISTERS, else the build's
// jit_max_registers, else Halide 21's 64 or $HL_CUDA_JIT_MAX_REGISTERS). Each
// --times record names it ("max_registers", 0 = no cap) and the variant's
// kernel entries as the driver compiled them ("entries": [registers, local
// bytes a thread] each, in the order first launched), and where the hook
// set it the winners' file keeps it as "jit_max_registers", so that a build
// with that file runs its kernels under the cap they won with. To compare
// caps, sweep once per cap (bench/gpu/run.sh, HMHA_GPU_CAPS).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../../runtime/src/batch_passes.h"
#include "../../runtime/src/cuda_driver_hooks.h"
#include "HalideBuffer.h"
#include "HalideRuntime.h"
#include "gpu_variants.h"
#include "tune_args.h"
#include "hmha_attend_cpu.h"
#include "hmha_head_mean_cpu.h"
#include "hmha_linear_cpu.h"
#include "hmha_masked_softmax_cpu.h"
#include "hmha_sdpa_cpu.h"
#if HMHA_HAVE_CUDA
#include "HalideRuntimeCuda.h"
#endif
#if HMHA_HAVE_OPENCL
#include "HalideRuntimeOpenCL.h"
#endif

namespace {

using hmha_tune::Shape;
using hmha_tune::split;

using Buf = Halide::Runtime::Buffer<float>;
using Bytes = Halide::Runtime::Buffer<uint8_t>;

std::string last_error;

Buf random_buffer(std::vector<int> extents, std::mt19937 &rng, float lo = -1.0f, float hi = 1.0f) {
    Buf b(extents);
    std::uniform_real_distribution<float> u(lo, hi);
    b.for_each_value([&](float &x) { x = u(rng); });
    return b;
}

// A zero-stride view of a zero row, as the runtime passes absent masks.
template <typename T>
Halide::Runtime::Buffer<T> zero_mask(Halide::Runtime::Buffer<T> &row, std::vector<int> extents) {
    std::vector<halide_dimension_t> dims{{0, row.dim(0).extent(), 1}};
    for (int e : extents) dims.push_back({0, e, 0});
    return Halide::Runtime::Buffer<T>(row.data(), (int)dims.size(), dims.data());
}

// The inputs of every kernel at one shape, on the host; `up` copies them to a device.
struct Inputs {
    Shape s;
    int D;
    Buf x, weight_t, bias, q, k, v, weights, zf_row, am, kpm;
    Bytes zb_row, amb;
    bool causal = false;  // sdpa and masked_softmax: is_causal

    Inputs(const Shape &sh, std::mt19937 &rng) : s(sh), D(sh.E / sh.H) {
        x = random_buffer({s.E, s.N * s.L}, rng);
        weight_t = random_buffer({s.E, s.E}, rng, -0.05f, 0.05f);
        bias = random_buffer({s.E}, rng);
        q = random_buffer({D, s.H, s.L, s.N}, rng);
        k = random_buffer({D, s.H, s.S, s.N}, rng);
        v = random_buffer({D, s.H, s.S, s.N}, rng);
        weights = random_buffer({s.S, s.L, s.H, s.N}, rng, 0.0f, 1.0f / (float)s.S);
        zf_row = Buf(s.S);
        zf_row.fill(0.0f);
        zb_row = Bytes(s.S);
        zb_row.fill(0);
        am = zero_mask(zf_row, {s.L, s.H, s.N});
        amb = zero_mask(zb_row, {s.L, s.H, s.N});
        kpm = zero_mask(zf_row, {s.N});
    }

    bool up(const halide_device_interface_t *iface) {
        for (Buf *b : {&x, &weight_t, &bias, &q, &k, &v, &weights, &am, &kpm}) {
            b->set_host_dirty();
            if (b->copy_to_device(iface) != 0) return false;
        }
        amb.set_host_dirty();
        return amb.copy_to_device(iface) == 0;
    }
};

// Output of `kernel` at shape s (host allocation).
Buf output_for(const std::string &kernel, const Inputs &in) {
    const Shape &s = in.s;
    if (kernel == "linear") return Buf(s.E, s.N * s.L);
    if (kernel == "sdpa" || kernel == "attend") return Buf(in.D, s.H, s.L, s.N);
    if (kernel == "masked_softmax") return Buf(s.S, s.L, s.H, s.N);
    return Buf(s.S, s.L, s.N);  // head_mean
}

// Calls `fn` (with the signature of hmha_<kernel>_cpu) on the inputs.
int call(const std::string &kernel, void *fn, Inputs &in, Buf &out) {
    const float scale = 1.0f / std::sqrt((float)in.D);
    if (kernel == "linear") {
        return ((decltype(&hmha_linear_cpu))fn)(in.x, in.weight_t, in.bias, out);
    }
    if (kernel == "sdpa") {
        return ((decltype(&hmha_sdpa_cpu))fn)(in.q, in.k, in.v, in.am, in.amb, in.kpm, in.s.S, in.causal, false, scale,
                                              out);
    }
    if (kernel == "masked_softmax") {
        return ((decltype(&hmha_masked_softmax_cpu))fn)(in.q, in.k, in.am, in.amb, in.kpm, in.s.S, in.causal, false,
                                                        scale, out);
    }
    if (kernel == "attend") return ((decltype(&hmha_attend_cpu))fn)(in.weights, in.v, out);
    return ((decltype(&hmha_head_mean_cpu))fn)(in.weights, out);
}

void *cpu_kernel(const std::string &kernel) {
    if (kernel == "linear") return (void *)hmha_linear_cpu;
    if (kernel == "sdpa") return (void *)hmha_sdpa_cpu;
    if (kernel == "masked_softmax") return (void *)hmha_masked_softmax_cpu;
    if (kernel == "attend") return (void *)hmha_attend_cpu;
    return (void *)hmha_head_mean_cpu;
}

// How a variant is named in the logs.
std::string label(const GpuVariant &v) {
    if (v.autoscheduler != nullptr) return std::string("(") + v.autoscheduler + " for " + v.estimate + ")";
    return *v.params ? v.params : "(defaults)";
}

// The need_weights kernels, which the runtime calls kWeightsQueryChunk queries
// (a round) at a time.
bool per_round(const std::string &kernel) {
    return kernel == "attend" || kernel == "head_mean" || kernel == "masked_softmax";
}

// Whether a variant runs at shape s: ours at every shape, an autoscheduled
// one at the shape it was scheduled for only (the need_weights kernels' at
// that shape's round of queries, as the sweep times them).
bool runs_at(const GpuVariant &v, const Shape &s) {
    if (v.autoscheduler == nullptr) return true;
    const Shape e = hmha_tune::parse_shape(v.estimate);
    const int L = per_round(v.kernel) ? std::min<int>(e.L, (int)hmha::kWeightsQueryChunk) : e.L;
    return e.N == s.N && L == s.L && e.S == s.S && e.E == s.E && e.H == s.H;
}

double max_rel_diff(const Buf &a, const Buf &ref) {
    double diff = 0, mag = 0;
    const float *pa = a.data(), *pr = ref.data();
    for (size_t i = 0; i < ref.number_of_elements(); i++) {
        diff = std::max(diff, (double)std::fabs(pa[i] - pr[i]));
        mag = std::max(mag, (double)std::fabs(pr[i]));
    }
    return mag > 0 ? diff / mag : diff;
}

const halide_device_interface_t *device_interface(const std::string &family) {
#if HMHA_HAVE_CUDA
    if (family == "cuda") return halide_cuda_device_interface();
#endif
#if HMHA_HAVE_OPENCL
    if (family == "opencl") return halide_opencl_device_interface();
#endif
    return nullptr;
}

}  // namespace

extern "C" void halide_error(void *, const char *msg) {
    last_error = msg ? msg : "";
    while (!last_error.empty() && last_error.back() == '\n') last_error.pop_back();
}

int main(int argc, char **argv) {
    const auto start = std::chrono::steady_clock::now();
    auto elapsed_s = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    std::string family, out_path, times_path;
    bool quick = false, verbose = false;
    std::vector<Shape> shapes;
    std::string peers = "with";
    std::vector<std::string> only_kernels;
    bool list_peers = false;
    std::vector<std::string> match;
    double deadline_s = 0;  // 0: none
    auto usage = [] {
        std::fprintf(stderr, "usage: hmha_gpu_tune --device cuda|opencl [--out FILE] [--quick] [--verbose] "
                             "[--shapes N,L,S,E,H;...] [--times FILE] [--peers with|none|only] [--kernels K,...] "
                             "[--list-peers] [--match TEXT;...] [--deadline SECONDS]\n");
        return 2;
    };
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--device" && i + 1 < argc) {
            family = argv[++i];
        } else if (a == "--out" && i + 1 < argc) {
            out_path = argv[++i];
        } else if (a == "--times" && i + 1 < argc) {
            times_path = argv[++i];
        } else if (a == "--quick") {
            quick = true;
        } else if (a == "--verbose") {
            verbose = true;
        } else if (a == "--peers" && i + 1 < argc) {
            peers = argv[++i];
            if (peers != "with" && peers != "none" && peers != "only") {
                std::fprintf(stderr, "hmha_gpu_tune: --peers: expected with, none or only, got '%s'\n", peers.c_str());
                return 2;
            }
        } else if (a == "--kernels" && i + 1 < argc) {
            only_kernels = split(argv[++i], ',');
        } else if (a == "--match" && i + 1 < argc) {
            match = split(argv[++i], ';');
        } else if (a == "--list-peers") {
            list_peers = true;
        } else if (a == "--deadline" && i + 1 < argc) {
            char *end = nullptr;
            deadline_s = std::strtod(argv[++i], &end);
            if (end == argv[i] || *end != '\0' || !(deadline_s > 0) || !std::isfinite(deadline_s)) {
                std::fprintf(stderr, "hmha_gpu_tune: --deadline: expected seconds > 0, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (a == "--shapes" && i + 1 < argc) {
            if (!hmha_tune::parse_shapes("hmha_gpu_tune", argv[++i], shapes)) return 2;
        } else {
            return usage();
        }
    }
    const halide_device_interface_t *iface = device_interface(family);
    if (iface == nullptr) {
        std::fprintf(stderr, "hmha_gpu_tune: --device: expected a GPU family of this build (cuda, opencl), got '%s'\n",
                     family.c_str());
        return 2;
    }
    if (list_peers) {  // "kernel N,L,S,E,H" per autoscheduled variant of this family, for run.sh
        for (const GpuVariant &v : gpu_variants()) {
            if (v.family == family && v.autoscheduler != nullptr) std::printf("%s %s\n", v.kernel, v.estimate);
        }
        return 0;
    }
    if (out_path.empty()) out_path = "schedules/tuned/" + family + ".json";
    // As the runtime does (runtime/src/kernels.cpp): CUDA variants with more
    // than 48 KiB of shared memory a block run, up to the device's opt-in
    // limit, and the PTX JIT gets the configured register cap.
    if (family == "cuda") hmha::cuda_hooks::install();
    {
        Buf probe(1);
        if (probe.device_malloc(iface) != 0) {
            std::fprintf(stderr, "hmha_gpu_tune: device '%s' is not available: %s\n", family.c_str(),
                         last_error.c_str());
            return 4;
        }
    }
    halide_reuse_device_allocations(nullptr, true);

    // The GPU bench shapes of issue 3; the need_weights kernels at the first only
    // (their (S, L, H, N) weights are 512 MiB at L = S = 4096).
    const std::vector<Shape> fused = shapes.empty() ? (quick ? std::vector<Shape>{{2, 64, 64, 128, 4}}
                                                             : std::vector<Shape>{{4, 512, 512, 512, 8},
                                                                                  {1, 4096, 4096, 512, 8}})
                                                    : shapes;
    const std::vector<Shape> weighted = shapes.empty() ? std::vector<Shape>{fused[0]} : shapes;
    const int reps = quick ? 3 : 10;

    std::mt19937 rng(1);
    std::map<std::string, std::vector<const GpuVariant *>> by_kernel;
    std::vector<std::string> order;
    for (const GpuVariant &v : gpu_variants()) {
        if (v.family != family) continue;
        if ((peers == "none" && v.autoscheduler != nullptr) || (peers == "only" && v.autoscheduler == nullptr)) continue;
        if (!only_kernels.empty() &&
            std::find(only_kernels.begin(), only_kernels.end(), std::string(v.kernel)) == only_kernels.end()) {
            continue;
        }
        if (!match.empty() && *v.params && std::none_of(match.begin(), match.end(), [&](const std::string &m) {
                return std::string(v.params).find(m) != std::string::npos;
            })) {
            continue;
        }
        if (!by_kernel.count(v.kernel)) order.push_back(v.kernel);
        by_kernel[v.kernel].push_back(&v);
    }
    // The JIT's register cap the kernels ran under (CUDA; -1 elsewhere): the
    // hook's, else Halide 21's own.
    int hook_cap = hmha::cuda_hooks::kKeepHalideCap, max_registers = -1;
    if (family == "cuda") {
        hook_cap = hmha::cuda_hooks::state().max_registers.load();
        max_registers = hmha::cuda_hooks::jit_max_registers();
        std::printf("CUDA JIT register cap: %d%s\n", max_registers,
                    hook_cap != hmha::cuda_hooks::kKeepHalideCap ? (max_registers ? "" : " (none: the driver chooses)")
                                                                 : " (Halide's)");
    }
    std::string json = "{\n  \"target\": \"" + family + "\",\n";
    if (hook_cap != hmha::cuda_hooks::kKeepHalideCap) {
        json += "  \"jit_max_registers\": " + std::to_string(hook_cap) + ",\n";
    }
    json += "  \"kernels\": {\n";
    std::vector<std::string> winners;  // "kernel": {params} of each kernel swept whole
    std::ofstream times_file;
    if (!times_path.empty()) times_file.open(times_path);
    std::string table;
    int failures = 0;
    for (const std::string &kernel : order) {
        const auto &variants = by_kernel[kernel];
        const double kernel_start = elapsed_s();
        const bool uses_weights = per_round(kernel);
        std::vector<double> sum(variants.size(), 0.0);
        std::vector<std::vector<std::string>> timed_at(variants.size());  // --times records, per variant
        std::vector<std::string> why(variants.size());
        // CUDA: each variant's kernel entries as the driver compiled them
        // (registers, local bytes a thread; cuda_driver_hooks.h), noted as
        // its checked calls first launch them.
        std::vector<std::string> entries(variants.size());
        std::vector<std::map<std::string, double>> ms_at(variants.size());  // shape name -> best round's ms
        for (size_t i = 0; i < variants.size(); i++) {
            if (variants[i]->failed != nullptr) why[i] = variants[i]->failed;
        }
        // sdpa variants must also run (untimed) at head_dim 128, the widest head
        // the runtime gives the fused kernel on a GPU (its shared memory grows with it).
        // The need_weights kernels at the queries of one of the runtime's
        // rounds (kWeightsQueryChunk), as it calls them.
        struct Run {
            Shape s;
            bool timed, causal = false;
        };
        std::vector<Run> runs;
        for (Shape s : uses_weights ? weighted : fused) {
            if (uses_weights) s.L = std::min<int>(s.L, (int)hmha::kWeightsQueryChunk);
            runs.push_back({s, true});
        }
        if (kernel == "sdpa") runs.push_back({Shape{1, 64, 64, 1024, 8}, false});
        // --quick (whose timed shape has head_dim 32): sdpa checked at head_dim
        // 64 too, where its variants' gpu_head_dim copies run, here in a
        // partial block of queries (67) and an odd number of keys (45), and
        // causal there.
        if (kernel == "sdpa" && quick) {
            runs.push_back({Shape{1, 67, 45, 128, 2}, false});
            runs.push_back({Shape{1, 67, 45, 128, 2}, false, true});
        }
        size_t runs_done = 0;
        auto past_deadline = [&] { return deadline_s > 0 && elapsed_s() >= deadline_s; };
        for (const auto &[s, timed, causal] : runs) {
            if (past_deadline()) break;
            Inputs in(s, rng);
            in.causal = causal;
            const std::string at = s.name() + (causal ? " causal" : "");
            Buf ref = output_for(kernel, in);
            if (call(kernel, cpu_kernel(kernel), in, ref) != 0) {
                std::fprintf(stderr, "hmha_gpu_tune: the CPU %s failed at %s: %s\n", kernel.c_str(), at.c_str(),
                             last_error.c_str());
                return 1;
            }
            if (!in.up(iface)) {
                std::fprintf(stderr, "hmha_gpu_tune: copying inputs to %s failed: %s\n", family.c_str(),
                             last_error.c_str());
                return 1;
            }
            std::vector<Buf> outs;
            bool cut = false;  // by the deadline, before every variant was checked (CUDA: JIT-compiled) here
            for (size_t i = 0; i < variants.size(); i++) {
                outs.push_back(output_for(kernel, in));
                if (!why[i].empty() || !runs_at(*variants[i], s)) continue;
                cut = past_deadline();
                if (cut) break;
                last_error.clear();
                const size_t known = hmha::cuda_hooks::compiled_kernels().size();
                int st = call(kernel, variants[i]->fn, in, outs[i]);
                const std::vector<hmha::cuda_hooks::CompiledKernel> compiled = hmha::cuda_hooks::compiled_kernels();
                for (size_t e = known; e < compiled.size(); e++) {
                    entries[i] += std::string(entries[i].empty() ? "" : ", ") + "[" +
                                  std::to_string(compiled[e].registers) + ", " + std::to_string(compiled[e].local_bytes) +
                                  "]";
                }
                if (st == 0) st = outs[i].copy_to_host();
                if (st != 0) {
                    why[i] = "failed at " + at + " (Halide status " + std::to_string(st) + "): " + last_error;
                    continue;
                }
                const double d = max_rel_diff(outs[i], ref);
                if (!(d <= 1e-3)) {
                    why[i] = "differs from the CPU kernel at " + at + " (max rel diff " + std::to_string(d) + ")";
                }
            }
            if (cut) break;
            runs_done++;
            if (!timed) continue;
            std::vector<double> best(variants.size(), 1e30);
            for (int round = 0; round < 3; round++) {
                for (size_t i = 0; i < variants.size(); i++) {
                    if (!why[i].empty() || !runs_at(*variants[i], s)) continue;
                    std::vector<double> t;
                    for (int r = 0; r < reps && why[i].empty(); r++) {
                        auto t0 = std::chrono::steady_clock::now();
                        last_error.clear();
                        int st = call(kernel, variants[i]->fn, in, outs[i]);
                        if (st == 0) st = outs[i].device_sync();
                        if (st != 0) {
                            why[i] = "failed while timed at " + s.name() + " (Halide status " + std::to_string(st) +
                                     "): " + last_error;
                        }
                        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                                        .count());
                    }
                    if (!why[i].empty()) continue;
                    std::sort(t.begin(), t.end());
                    best[i] = std::min(best[i], t[t.size() / 2]);
                }
            }
            for (size_t i = 0; i < variants.size(); i++) {
                if (!runs_at(*variants[i], s)) continue;
                if (why[i].empty()) {
                    sum[i] += best[i];
                    ms_at[i][s.name()] = best[i];
                    char rec[512];
                    std::snprintf(rec, sizeof(rec),
                                  "\"kernel\": \"%s\", \"shape\": [%lld, %lld, %lld, %lld, %lld], \"params\": \"%s\", "
                                  "\"autoscheduler\": \"%s\", \"max_registers\": %d, \"ms\": %.6g",
                                  kernel.c_str(), (long long)s.N, (long long)s.L, (long long)s.S, (long long)s.E,
                                  (long long)s.H, variants[i]->params,
                                  variants[i]->autoscheduler ? variants[i]->autoscheduler : "", max_registers,
                                  best[i]);
                    timed_at[i].push_back(std::string(rec) + ", \"entries\": [" + entries[i] + "]");
                }
                if (verbose) {
                    const std::string regs = entries[i].empty() ? "" : "  (registers, local bytes: " + entries[i] + ")";
                    std::printf("  %-15s %-22s %-55s %s%s\n", kernel.c_str(), s.name().c_str(),
                                label(*variants[i]).c_str(),
                                why[i].empty() ? (std::to_string(best[i]) + " ms").c_str() : why[i].c_str(),
                                regs.c_str());
                }
            }
        }
        // A variant that failed a later check (head_dim 128) is marked: it can never win.
        const bool complete = runs_done == runs.size();
        for (size_t i = 0; i < variants.size(); i++) {
            for (const std::string &rec : timed_at[i]) {
                times_file << "{\"device\": \"" << family << "\", " << rec
                           << ", \"valid\": " << (why[i].empty() ? "true" : "false")
                           << (complete ? "" : ", \"complete\": false") << "}\n";
            }
        }
        times_file.flush();
        char line[512];
        std::printf("%s: %zu variants, %zu of %zu runs, %.1f s\n", kernel.c_str(), variants.size(), runs_done,
                    runs.size(), elapsed_s() - kernel_start);
        std::fflush(stdout);  // a log cut off by a timeout keeps every finished kernel's lines
        size_t w = variants.size();
        for (size_t i = 0; i < variants.size(); i++) {
            if (!why[i].empty()) {
                std::fprintf(stderr, "%s [%s]: %s\n", kernel.c_str(), label(*variants[i]).c_str(), why[i].c_str());
                failures += i == 0 && variants[i]->autoscheduler == nullptr;  // the untuned defaults must work
                continue;
            }
            if (variants[i]->autoscheduler == nullptr && (w == variants.size() || sum[i] < sum[w])) w = i;
        }
        if (!complete) {
            std::snprintf(line, sizeof(line), "%-15s cut by --deadline %g s after %zu of %zu runs: no winner\n",
                          kernel.c_str(), deadline_s, runs_done, runs.size());
            table += line;
            continue;
        }
        std::string winner = "    \"" + kernel + "\": {";
        if (w == variants.size()) {
            std::snprintf(line, sizeof(line), "%-15s no variant ran\n", kernel.c_str());
        } else {
            bool first = true;
            for (const auto &kv : split(variants[w]->params, ' ')) {
                auto eq = kv.find('=');
                if (eq == std::string::npos) continue;
                winner += std::string(first ? "" : ", ") + "\"" + kv.substr(0, eq) + "\": " + kv.substr(eq + 1);
                first = false;
            }
            std::snprintf(line, sizeof(line), "%-15s %-55s %9.3f ms (defaults %s)\n", kernel.c_str(),
                          *variants[w]->params ? variants[w]->params : "(defaults)", sum[w],
                          why[0].empty() ? (std::to_string(sum[0]) + " ms").c_str() : "failed");
        }
        table += line;
        // Each autoscheduled peer against the winner and the defaults at its shape.
        for (size_t i = 0; i < variants.size(); i++) {
            if (variants[i]->autoscheduler == nullptr) continue;
            const std::string at = hmha_tune::parse_shape(variants[i]->estimate).name();
            std::string what = why[i];
            if (what.empty() && !ms_at[i].count(at)) what = "not run (its shape is not swept)";
            if (what.empty()) {
                auto ours = [&](size_t v) {
                    return v < variants.size() && ms_at[v].count(at) ? std::to_string(ms_at[v][at]) : std::string("-");
                };
                what = std::to_string(ms_at[i][at]) + " ms (winner " + ours(w) + ", defaults " + ours(0) + ")";
            }
            std::snprintf(line, sizeof(line), "%-15s %-55s %s\n", "", label(*variants[i]).c_str(), what.c_str());
            table += line;
        }
        winners.push_back(winner + "}");
    }
    for (size_t i = 0; i < winners.size(); i++) json += winners[i] + (i + 1 < winners.size() ? ",\n" : "\n");
    json += "  }\n}\n";
    std::printf("device %s; each kernel's time summed over its shapes\n%s", family.c_str(), table.c_str());
    std::ofstream(out_path) << json;
    std::printf("wrote %s\n", out_path.c_str());
    return failures ? 1 : 0;
}
