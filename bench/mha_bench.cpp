// The CPU bench (bench/README.md). Two ways to run it:
//
//   build/bench/hmha_bench [--hmha-device=cpu|cuda|opencl] [--benchmark_filter=...]
//                          [--benchmark_repetitions=5]
//       Google Benchmark: the full MHA forward at the shapes of issue 4, ours as
//       mha_forward/<shape>/..., the C++ peers as mha_forward_<peer>/<shape>/...,
//       and OpenBLAS sgemm at the projection shapes. --hmha-device moves ours only.
//
//   build/bench/hmha_bench --case IMPL --shape N,L,S,E,H [--need-weights] [--causal]
//                          [--cross] [--min-time SEC] [--dump DIR | --ref DIR]
//                          [--scratch auto|sequence|per-head] [--batch-chunk B]
//                          [--gpu-attention fused|unfused] [--per-head-weights]
//       One forward case in this (fresh) process, as one JSON line: median ms,
//       GFLOP/s, peak resident memory, and the check against our output. IMPL is
//       ours, blas, or a kernel set of --list: ours-kernels (our kernels in
//       the bench's driver, peers/kernel_mha.h), and with
//       -DHMHA_BENCH_AUTOSCHEDULERS=ON the autoscheduled sets. bench/report.py
//       drives these.
//       --per-head-weights: need_weights with average_attn_weights=false, the
//       weights (N, H, L, S) (ours only; torch_mha.py --ref runs nn.MHA so).
//   build/bench/hmha_bench --sgemm ROWS,E [--min-time SEC] |
//                          --kernel NAME --impl SET --shape ... [--min-time SEC] [--min-reps N] |
//                          --fma-peak | --list
//
// Each way to run takes only its own options: a misspelt or misplaced one,
// a malformed number or shape, ends the bench with exit code 2 and a message
// naming it. A case or kernel that cannot run or does not match ours prints
// its JSON line with "ok":false and the reason, repeats the reason on stderr,
// and exits with code 1.
//
// GFLOP/s everywhere uses flops() of bench_common.h: the four projections and
// the two attention matmuls (4*N*L*S*E; halved for causal).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "bench_common.h"
#include "hmha/hmha.h"
#include "peers/blas_mha.h"
#include "peers/kernel_mha.h"
#include "tune/tune_args.h"

namespace {

using namespace hmha_bench;

// ---- the implementations behind one interface ----------------------------------

struct Impl {
    virtual ~Impl() = default;
    // Writes out (N, L, E) and, when weights is not null, weights (N, L, S).
    virtual void forward(const Shape &s, const MhaInputs &in, bool causal, bool need_weights, float *out,
                         float *weights) = 0;
    // Implementations that allocate their own outputs point at them here.
    virtual const float *out_ptr() const { return nullptr; }
    virtual const float *weights_ptr() const { return nullptr; }
};

// --hmha-device=cpu|cuda|opencl: the device of ours (the peers are CPU code).
hmha::Device g_device = hmha::Device::CPU;
hmha::Scratch g_scratch = hmha::Scratch::Auto;
int64_t g_batch_chunk = 0;  // hmha::Options::batch_chunk
hmha::GpuAttention g_gpu_attention = hmha::GpuAttention::Fused;
// --per-head-weights: need_weights returns every head's weights, not their mean.
bool g_per_head_weights = false;

class Ours : public Impl {
public:
    Ours(const MhaWeights &w, const Shape &s) {
        const int64_t E = s.E;
        std::map<std::string, hmha::Tensor> sd{
            {"in_proj_weight", hmha::Tensor::wrap(const_cast<float *>(w.in_proj_weight.data()), {3 * E, E})},
            {"in_proj_bias", hmha::Tensor::wrap(const_cast<float *>(w.in_proj_bias.data()), {3 * E})},
            {"out_proj.weight", hmha::Tensor::wrap(const_cast<float *>(w.out_proj_weight.data()), {E, E})},
            {"out_proj.bias", hmha::Tensor::wrap(const_cast<float *>(w.out_proj_bias.data()), {E})}};
        hmha::Options opt;
        opt.embed_dim = E;
        opt.num_heads = s.H;
        opt.batch_first = true;
        opt.device = g_device;
        opt.scratch = g_scratch;
        opt.batch_chunk = g_batch_chunk;
        opt.gpu_attention = g_gpu_attention;
        mha_.emplace(opt, sd);
    }
    // On a GPU the inputs are copied to the device once (the first, untimed,
    // call), the outputs stay there and every call is waited for: timed as
    // PyTorch on that device is (torch_mha.py --device cuda).
    void forward(const Shape &s, const MhaInputs &in, bool causal, bool need_weights, float *, float *) override {
        hmha::Tensor q = hmha::Tensor::wrap(const_cast<float *>(in.query.data()), {s.N, s.L, s.E});
        hmha::Tensor kv = hmha::Tensor::wrap(const_cast<float *>(in.key()), {s.N, s.S, s.E});
        if (g_device != hmha::Device::CPU) {
            if (dev_inputs_.empty() || dev_query_src_ != in.query.data()) {
                dev_inputs_ = {q.to_device(g_device)};
                if (in.key() != in.query.data()) dev_inputs_.push_back(kv.to_device(g_device));
                dev_query_src_ = in.query.data();
            }
            q = dev_inputs_.front();
            kv = dev_inputs_.back();
        }
        hmha::ForwardOptions f;
        f.need_weights = need_weights;
        f.average_attn_weights = !g_per_head_weights;
        f.is_causal = causal;  // hmha needs no attn_mask for it (PyTorch does: torch_mha.py passes one)
        last_ = {};  // the previous result goes first: one output alive at a time
        host_out_.reset();
        host_weights_.reset();
        last_ = mha_->forward(q, kv, kv, f);
        hmha::synchronize(g_device);
    }
    const float *out_ptr() const override {
        if (last_.attn_output.device() == hmha::Device::CPU) return last_.attn_output.f32();
        if (!host_out_) host_out_ = last_.attn_output.to_host();
        return host_out_->f32();
    }
    const float *weights_ptr() const override {
        if (!last_.attn_output_weights) return nullptr;
        if (last_.attn_output_weights->device() == hmha::Device::CPU) return last_.attn_output_weights->f32();
        if (!host_weights_) host_weights_ = last_.attn_output_weights->to_host();
        return host_weights_->f32();
    }

private:
    std::optional<hmha::MultiheadAttention> mha_;
    hmha::ForwardResult last_;
    std::vector<hmha::Tensor> dev_inputs_;  // device copies of the inputs (Tensor::to_device)
    const float *dev_query_src_ = nullptr;
    mutable std::optional<hmha::Tensor> host_out_, host_weights_;  // host copies of device outputs, made when asked for
};

class Blas : public Impl {
public:
    Blas(const MhaWeights &w, const Shape &s) : mha_(w, s.H) {}
    void forward(const Shape &s, const MhaInputs &in, bool causal, bool need_weights, float *out,
                 float *weights) override {
        mha_.forward(s, in.query.data(), in.key(), causal, out, need_weights ? weights : nullptr);
    }

private:
    BlasMha mha_;
};

class Kernels : public Impl {
public:
    Kernels(const KernelSet &ks, const MhaWeights &w, const Shape &s) : mha_(ks, w, s.H) {}
    void forward(const Shape &s, const MhaInputs &in, bool causal, bool need_weights, float *out,
                 float *weights) override {
        mha_.forward(s, in.query.data(), in.key(), causal, out, need_weights ? weights : nullptr);
    }

private:
    KernelMha mha_;
};

// Null with `why` set when this build cannot run `name` for this case.
std::unique_ptr<Impl> make_impl(const std::string &name, const MhaWeights &w, const Shape &s, bool need_weights,
                                std::string &why) {
    if (name == "ours") return std::make_unique<Ours>(w, s);
    if (g_per_head_weights) {
        why = "--per-head-weights: only ours returns per-head weights here ('" + name +
              "' averages them; torch_mha.py runs nn.MultiheadAttention with them)";
        return nullptr;
    }
    if (name == "blas") return std::make_unique<Blas>(w, s);
    if (const KernelSet *ks = find_kernel_set(name, s)) {
        if (!ks->can_forward(need_weights)) {
            why = std::string(ks->name) + " could not schedule every kernel of the " +
                  (need_weights ? "need_weights" : "fused") + " path (see --list)";
            return nullptr;
        }
        return std::make_unique<Kernels>(*ks, w, s);
    }
    why = "unknown implementation '" + name + "' (ours, blas, or a kernel set of --list)";
    return nullptr;
}

// ---- the practical limits -------------------------------------------------------

double sgemm_gflops(benchmark::State *state, int64_t rows, int64_t E, double min_seconds, Timing *timing) {
    auto a = random_floats((size_t)(rows * E), 1.0f, 1), w = random_floats((size_t)(E * E), 1.0f, 2);
    std::vector<float> c((size_t)(rows * E));
    auto run = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)E, (int)E, 1.0f, a.data(), (int)E,
                    w.data(), (int)E, 0.0f, c.data(), (int)E);
    };
    if (state) {
        for (auto _ : *state) {
            run();
            benchmark::DoNotOptimize(c.data());
        }
        return 0;
    }
    *timing = time_runs(run, 2, 5, 1000, min_seconds);
    return 2.0 * rows * E * E / (timing->median_ms * 1e6);
}

// FMA throughput with independent accumulators on every hardware thread (x86-64;
// elsewhere --fma-peak reports 0).
#if defined(__x86_64__)
template <int W>
__attribute__((target("avx512f,avx2,fma"))) double fma_loop(int64_t iters) {
    constexpr int kAcc = 12;
    if constexpr (W == 16) {
        __m512 acc[kAcc], x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
        for (int k = 0; k < kAcc; k++) acc[k] = _mm512_set1_ps((float)k);
        for (int64_t i = 0; i < iters; i++) {
            for (int k = 0; k < kAcc; k++) acc[k] = _mm512_fmadd_ps(acc[k], x, y);
        }
        __m512 s = acc[0];
        for (int k = 1; k < kAcc; k++) s = _mm512_add_ps(s, acc[k]);
        float v[16];
        _mm512_storeu_ps(v, s);
        return (double)(v[0] + v[15]);
    } else {
        __m256 acc[kAcc], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
        for (int k = 0; k < kAcc; k++) acc[k] = _mm256_set1_ps((float)k);
        for (int64_t i = 0; i < iters; i++) {
            for (int k = 0; k < kAcc; k++) acc[k] = _mm256_fmadd_ps(acc[k], x, y);
        }
        __m256 s = acc[0];
        for (int k = 1; k < kAcc; k++) s = _mm256_add_ps(s, acc[k]);
        float v[8];
        _mm256_storeu_ps(v, s);
        return (double)(v[0] + v[7]);
    }
}

template <int W>
double fma_peak_gflops(int threads) {
    const int64_t iters = 50'000'000;
    std::atomic<double> sink{0};
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; t++) pool.emplace_back([&] { sink = sink + fma_loop<W>(iters); });
    for (auto &t : pool) t.join();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(sink.load());
    return 2.0 * W * 12 * (double)iters * threads / s * 1e-9;
}

bool cpu_has(const char *feature) {
    __builtin_cpu_init();
    return std::string(feature) == "avx512f" ? __builtin_cpu_supports("avx512f") : __builtin_cpu_supports("avx2");
}
#else
template <int W>
double fma_peak_gflops(int) {
    return 0.0;
}
bool cpu_has(const char *) {
    return false;
}
#endif

// ---- --case: one case, one JSON line ----------------------------------------------

struct Args {
    std::map<std::string, std::string> kv;
    std::vector<std::string> positional;
    bool has(const std::string &k) const { return kv.count(k) != 0; }
    std::string get(const std::string &k, const std::string &d = "") const {
        auto it = kv.find(k);
        return it == kv.end() ? d : it->second;
    }
};

Args parse(int argc, char **argv) {
    Args a;
    for (int i = 1; i < argc; i++) {
        std::string s = argv[i];
        if (s.rfind("--", 0) != 0) {
            a.positional.push_back(s);
            continue;
        }
        s = s.substr(2);
        auto eq = s.find('=');
        if (eq != std::string::npos) {
            a.kv[s.substr(0, eq)] = s.substr(eq + 1);
        } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
            a.kv[s] = argv[++i];
        } else {
            a.kv[s] = "1";
        }
    }
    return a;
}

// A bad argument: main prints "hmha_bench: <what>" and exits with code 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The options of each way to run (the header above); anything else is refused,
// so that a misspelt option never runs a different case than asked for.
const std::map<std::string, std::vector<std::string>> kModeOptions{
    {"case", {"shape", "need-weights", "causal", "cross", "min-time", "min-reps", "dump", "ref", "scratch",
              "batch-chunk", "gpu-attention", "per-head-weights", "hmha-device"}},
    {"sgemm", {"min-time"}},
    {"kernel", {"impl", "shape", "min-time", "min-reps"}},
    {"fma-peak", {}},
    {"list", {}},
};

// The way a command line runs (case, sgemm, kernel, fma-peak, list; "" for
// Google Benchmark), after checking that its options belong to it.
std::string check_mode(const Args &a) {
    std::string mode;
    for (const auto &[m, opts] : kModeOptions) {
        if (!a.has(m)) continue;
        if (!mode.empty()) throw UsageError("--" + mode + " and --" + m + " are two ways to run; give one");
        mode = m;
    }
    for (const auto &[k, v] : a.kv) {
        if (k == mode || (mode.empty() && (k == "hmha-device" || k.rfind("benchmark_", 0) == 0))) continue;
        const auto &opts = kModeOptions.count(mode) ? kModeOptions.at(mode) : std::vector<std::string>{};
        if (std::find(opts.begin(), opts.end(), k) != opts.end()) continue;
        std::string known;
        for (const auto &o : opts) known += " --" + o;
        if (known.empty()) known = " none";
        if (mode.empty()) known = " --hmha-device and Google Benchmark's --benchmark_* (or --case, --sgemm, --kernel, "
                                  "--fma-peak, --list)";
        throw UsageError("unknown option --" + k + (mode.empty() ? "" : " for --" + mode) + " (expected" + known +
                         ")");
    }
    for (const auto &p : a.positional) throw UsageError("unexpected argument '" + p + "'");
    return mode;
}

// --key's value as a number of at least `min`, or `fallback` when absent.
template <typename T>
T number(const Args &a, const std::string &key, T fallback, T min, const char *what) {
    if (!a.has(key)) return fallback;
    const std::string text = a.get(key);
    T v{};
    size_t used = 0;
    bool parsed = false;
    try {
        if constexpr (std::is_floating_point_v<T>) {
            v = (T)std::stod(text, &used);
        } else {
            v = (T)std::stoll(text, &used);
        }
        parsed = used == text.size() && !text.empty();
    } catch (const std::exception &) {
        parsed = false;
    }
    if (!parsed || !(v >= min)) {
        std::ostringstream m;
        m << "--" << key << ": expected " << what << " >= " << min << ", got '" << text << "'";
        throw UsageError(m.str());
    }
    return v;
}

// Comma-separated positive integers, `count` of them.
std::vector<int64_t> ints(const std::string &key, const std::string &csv, size_t count, const char *form) {
    std::vector<int64_t> v;
    std::stringstream ss(csv);
    std::string t;
    bool good = !csv.empty() && csv.back() != ',';
    while (good && std::getline(ss, t, ',')) {
        size_t used = 0;
        try {
            v.push_back(std::stoll(t, &used));
        } catch (const std::exception &) {
            good = false;
        }
        good = good && used == t.size() && v.back() > 0;
    }
    if (!good || v.size() != count) {
        throw UsageError("--" + key + ": expected " + form + " (positive integers), got '" + csv + "'");
    }
    return v;
}

// --shape N,L,S,E,H (H dividing E: tune/tune_args.h's rule), or the bench's default shape.
Shape shape_arg(const Args &a) {
    const std::string text = a.get("shape", "4,512,512,512,8");
    int64_t v[5];
    if (const std::string why = hmha_tune::shape_spec_error(text, v); !why.empty()) throw UsageError("--shape: " + why);
    return Shape{v[0], v[1], v[2], v[3], v[4]};
}

std::string json_str(const std::string &s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        if (c == '\n') {
            o += "\\n";
            continue;
        }
        o += c;
    }
    return o + "\"";
}

std::string num(double v) {
    if (!std::isfinite(v)) return "null";
    std::ostringstream os;
    os.precision(6);
    os << v;
    return os.str();
}

std::string shape_json(const Shape &s) {
    std::ostringstream os;
    os << "[" << s.N << "," << s.L << "," << s.S << "," << s.E << "," << s.H << "]";
    return os.str();
}

int run_case(const Args &a) {
    const std::string impl_name = a.get("case");
    const Shape s = shape_arg(a);
    const bool per_head = g_per_head_weights;
    const bool nw = a.has("need-weights") || per_head, causal = a.has("causal"),
               cross = a.has("cross") || s.S != s.L;
    const double min_time = number(a, "min-time", 1.0, 0.0, "seconds");
    const int min_reps = number(a, "min-reps", 3, 1, "a count");
    const std::string dump = a.get("dump"), ref = a.get("ref");

    std::ostringstream js;
    js << "{\"impl\":" << json_str(impl_name) << ",\"shape\":" << shape_json(s)
       << ",\"need_weights\":" << (nw ? "true" : "false") << ",\"causal\":" << (causal ? "true" : "false")
       << ",\"cross\":" << (cross ? "true" : "false") << ",\"flops\":" << num(flops(s, causal))
       << ",\"essential_bytes\":" << num(essential_bytes(s, cross, nw, per_head));
    if (per_head) js << ",\"average_attn_weights\":false";
    // A case that cannot run or does not match: its JSON line with ok=false,
    // the reason on stderr too, exit code 1.
    auto fail = [&](const std::string &why) {
        std::cout << js.str() << ",\"ok\":false,\"error\":" << json_str(why) << "}" << std::endl;
        std::cerr << "hmha_bench: " << impl_name << ": " << why << "\n";
        return 1;
    };

    const int64_t rss_base = rss_bytes();
    // On CUDA, device memory too (NVML): the baseline once the context exists
    // (made by a one-float upload, not counted), the peak after the timed
    // runs. Halide keeps freed device blocks for reuse (the runtime turns that
    // on), so what the process then holds is the most it ever took from the
    // driver: a peak, like PyTorch's max_memory_reserved.
    int64_t gpu_base = -1;
    if (g_device == hmha::Device::CUDA && impl_name == "ours") {
        float zero = 0.0f;
        try {
            hmha::Tensor::wrap(&zero, {1}).to_device(g_device);
            hmha::synchronize(g_device);
            gpu_base = nvidia_gpu_used_bytes();
        } catch (const std::exception &) {
            gpu_base = -1;  // no device: the case itself reports why
        }
    }
    MhaWeights w = make_weights(s.E);
    MhaInputs in = make_inputs(s, cross);
    // The dump's inputs and parameters are written now, so that ours need not
    // keep the caller's copy of the parameters alive for it (a second copy,
    // 4 MiB at E = 512, once counted in ours' peak memory by the report).
    if (!dump.empty()) {
        write_file(dump + "/query.bin", in.query.data(), in.query.size());
        if (cross) write_file(dump + "/kv.bin", in.kv.data(), in.kv.size());
        write_file(dump + "/in_proj_weight.bin", w.in_proj_weight.data(), w.in_proj_weight.size());
        write_file(dump + "/in_proj_bias.bin", w.in_proj_bias.data(), w.in_proj_bias.size());
        write_file(dump + "/out_proj_weight.bin", w.out_proj_weight.data(), w.out_proj_weight.size());
        write_file(dump + "/out_proj_bias.bin", w.out_proj_bias.data(), w.out_proj_bias.size());
    }
    if (const KernelSet *ks = find_kernel_set(impl_name, s); ks && ks->estimate) {
        js << ",\"scheduled_for\":" << json_str(ks->estimate);
    }
    std::string why;
    std::unique_ptr<Impl> impl;
    try {
        impl = make_impl(impl_name, w, s, nw, why);
    } catch (const std::exception &e) {
        why = e.what();
    }
    if (!impl) return fail(why);
    // Ours holds its own copy of the parameters (as nn.MultiheadAttention does,
    // and torch_mha.py drops its staging tensors too): one copy of the weights
    // is alive while timed, as in an application.
    if (dynamic_cast<Ours *>(impl.get())) w = MhaWeights{};
    // Outputs owned by the caller (peers) or by the result (ours).
    std::vector<float> out, weights;
    if (!dynamic_cast<Ours *>(impl.get())) {
        out.resize((size_t)(s.N * s.L * s.E));
        if (nw) weights.resize((size_t)(s.N * s.L * s.S));
    }
    auto run = [&] { impl->forward(s, in, causal, nw, out.data(), weights.data()); };
    // One forward, checked against ours before anything is timed. It is also a
    // warm-up: after one of over 2 s (slow peers at the large shapes) no other.
    const auto t_check = std::chrono::steady_clock::now();
    try {
        run();
    } catch (const std::exception &e) {
        return fail(e.what());
    }
    const float *o = impl->out_ptr() ? impl->out_ptr() : out.data();
    const float *wo = nw ? (impl->weights_ptr() ? impl->weights_ptr() : weights.data()) : nullptr;
    const size_t n_out = (size_t)(s.N * s.L * s.E), n_w = (size_t)(s.N * s.L * s.S * (per_head ? s.H : 1));
    std::string check = "unchecked";
    double rel_out = 0, rel_w = 0;
    if (!dump.empty()) {
        std::string meta = dump + "/meta.json";
        write_file(dump + "/out.bin", o, n_out);
        if (nw) write_file(dump + "/weights.bin", wo, n_w);
        std::ofstream(meta) << "{\"shape\":" << shape_json(s) << ",\"need_weights\":" << (nw ? "true" : "false")
                            << ",\"causal\":" << (causal ? "true" : "false") << ",\"cross\":"
                            << (cross ? "true" : "false")
                            << ",\"average_attn_weights\":" << (per_head ? "false" : "true") << "}\n";
        check = "reference";
    } else if (!ref.empty()) {
        Diff d_out, d_w;
        if (!diff_file(d_out, o, n_out, ref + "/out.bin") || (nw && !diff_file(d_w, wo, n_w, ref + "/weights.bin"))) {
            return fail("cannot read the reference in " + ref);
        }
        rel_out = d_out.rel();
        rel_w = nw ? d_w.rel() : 0.0;
        const double tol = 1e-4;
        if (!(rel_out <= tol) || !(rel_w <= tol)) {
            std::ostringstream os;
            os << "output differs from ours: max abs diff " << d_out.max_abs << " (rel " << rel_out << ")";
            if (nw) os << ", weights max abs diff " << d_w.max_abs << " (rel " << rel_w << ")";
            return fail(os.str());
        }
        check = "matches";
    }
    const bool slow = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_check).count() > 2.0;
    Timing t;
    try {
        t = time_runs(run, slow ? 0 : 1, min_reps, 1000, min_time, slow ? 0.0 : 0.25);
    } catch (const std::exception &e) {
        return fail(e.what());
    }
    const int64_t peak = peak_rss_bytes();
    if (gpu_base >= 0) {
        const int64_t gpu_peak = nvidia_gpu_used_bytes();
        if (gpu_peak >= 0) js << ",\"gpu_used_base\":" << gpu_base << ",\"gpu_peak_delta\":" << (gpu_peak - gpu_base);
    }
    js << ",\"ok\":true,\"check\":" << json_str(check) << ",\"rel_diff_out\":" << num(rel_out)
       << ",\"rel_diff_weights\":" << num(rel_w) << ",\"ms\":" << num(t.median_ms) << ",\"min_ms\":" << num(t.min_ms)
       << ",\"max_ms\":" << num(t.max_ms) << ",\"reps\":" << t.reps << ",\"warmup\":" << t.warmup + 1
       << ",\"gflops\":" << num(flops(s, causal) / (t.median_ms * 1e6)) << ",\"rss_base\":" << rss_base
       << ",\"peak_rss\":" << peak << ",\"peak_delta\":" << (peak - rss_base) << "}";
    std::cout << js.str() << std::endl;
    return 0;
}

int run_sgemm(const Args &a) {
    auto v = ints("sgemm", a.get("sgemm"), 2, "ROWS,E");
    Timing t;
    double g = sgemm_gflops(nullptr, v.at(0), v.at(1), number(a, "min-time", 1.0, 0.0, "seconds"), &t);
    std::cout << "{\"impl\":\"openblas_sgemm\",\"ok\":true,\"rows\":" << v[0] << ",\"E\":" << v[1] << ",\"ms\":" << num(t.median_ms)
              << ",\"reps\":" << t.reps << ",\"gflops\":" << num(g) << "}" << std::endl;
    return 0;
}

int run_fma_peak() {
    const int threads = (int)std::thread::hardware_concurrency();
    double g16 = cpu_has("avx512f") ? fma_peak_gflops<16>(threads) : 0.0;
    double g8 = cpu_has("avx2") ? fma_peak_gflops<8>(threads) : 0.0;
    std::cout << "{\"impl\":\"fma_peak\",\"ok\":true,\"threads\":" << threads << ",\"avx512_gflops\":" << num(g16)
              << ",\"avx2_gflops\":" << num(g8) << ",\"gflops\":" << num(std::max(g16, g8)) << "}" << std::endl;
    return 0;
}

int run_kernel(const Args &a) {
    const Shape s = shape_arg(a);
    const double min_time = number(a, "min-time", 1.0, 0.0, "seconds");
    const std::string kernel = a.get("kernel"), set = a.get("impl", "ours-kernels");
    std::cout << "{\"kernel\":" << json_str(kernel) << ",\"impl\":" << json_str(set) << ",\"shape\":" << shape_json(s);
    const KernelSet *ks = find_kernel_set(set, s), *ref = find_kernel_set("ours-kernels", s);
    if (ks && ks->estimate) std::cout << ",\"scheduled_for\":" << json_str(ks->estimate);
    auto fail = [&](const std::string &why) {  // as run_case's
        std::cout << ",\"ok\":false,\"error\":" << json_str(why) << "}" << std::endl;
        std::cerr << "hmha_bench: --kernel " << kernel << " --impl " << set << ": " << why << "\n";
        return 1;
    };
    if (!ks) return fail("unknown kernel set (see --list)");
    KernelResult r = bench_kernel(kernel, *ks, *ref, s, min_time, number(a, "min-reps", 3, 1, "a count"));
    if (!r.ok) return fail(r.error);
    std::cout << ",\"ok\":true,\"ms\":" << num(r.timing.median_ms) << ",\"reps\":" << r.timing.reps
              << ",\"rel_diff\":" << num(r.rel_diff) << ",\"gflops\":" << num(r.flops / (r.timing.median_ms * 1e6))
              << "}" << std::endl;
    return 0;
}

int run_list() {
    std::cout << "{\"kernel_sets\":[";
    bool first = true;
    for (const KernelSet &ks : kernel_sets()) {
        std::cout << (first ? "" : ",") << "{\"name\":" << json_str(ks.name)
                  << ",\"scheduled_for\":" << (ks.estimate ? json_str(ks.estimate) : std::string("null"))
                  << ",\"linear\":" << !!ks.linear
                  << ",\"sdpa\":" << !!ks.sdpa << ",\"masked_softmax\":" << !!ks.masked_softmax
                  << ",\"attend\":" << !!ks.attend << ",\"head_mean\":" << !!ks.head_mean << "}";
        first = false;
    }
    std::cout << "]}" << std::endl;
    return 0;
}

// ---- Google Benchmark ---------------------------------------------------------------

void BM_forward(benchmark::State &state, std::string impl_name, Shape s, bool nw, bool causal) {
    MhaWeights w = make_weights(s.E);
    const bool cross = s.S != s.L;
    MhaInputs in = make_inputs(s, cross);
    std::string why;
    auto impl = make_impl(impl_name, w, s, nw, why);
    if (!impl) {
        state.SkipWithError(why.c_str());
        return;
    }
    std::vector<float> out((size_t)(s.N * s.L * s.E)), weights(nw ? (size_t)(s.N * s.L * s.S) : 0);
    auto run = [&] { impl->forward(s, in, causal, nw, out.data(), weights.data()); };
    run();
    const float *o = impl->out_ptr() ? impl->out_ptr() : out.data();
    for (size_t i = 0; i < out.size(); i++) {
        if (!std::isfinite(o[i])) {
            state.SkipWithError("non-finite output");
            return;
        }
    }
    for (auto _ : state) {
        run();
        benchmark::ClobberMemory();
    }
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops(s, causal) * 1e-9 * (double)state.iterations(), benchmark::Counter::kIsRate);
}

void BM_sgemm(benchmark::State &state, int64_t rows, int64_t E) {
    sgemm_gflops(&state, rows, E, 0, nullptr);
    state.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * rows * E * E * 1e-9 * (double)state.iterations(), benchmark::Counter::kIsRate);
}

std::string shape_name(const Shape &s) {
    return "N" + std::to_string(s.N) + "_L" + std::to_string(s.L) + "_S" + std::to_string(s.S) + "_E" +
           std::to_string(s.E) + "_H" + std::to_string(s.H);
}

void register_all() {
    // The shapes of issue 4.
    const Shape shapes[] = {{4, 512, 512, 512, 8}, {1, 2048, 2048, 1024, 16}, {1, 4096, 4096, 512, 8},
                            {32, 128, 128, 256, 4}};
    std::vector<std::string> impls{"ours", "blas"};
    for (const KernelSet &ks : kernel_sets()) {
        // One entry per autoscheduler: the case picks the set of its shape.
        if (std::string(ks.name) != "ours-kernels" && std::find(impls.begin(), impls.end(), ks.name) == impls.end()) {
            impls.push_back(ks.name);
        }
    }
    for (const Shape &s : shapes) {
        for (const std::string &impl : impls) {
            for (bool nw : {false, true}) {
                for (bool causal : {false, true}) {
                    if (causal && impl != "ours" && impl != "blas") continue;
                    // mha_forward/<shape>/... is ours (bench/gpu/run.sh filters on it);
                    // mha_forward_<peer>/<shape>/... the peers.
                    std::string name = (impl == "ours" ? std::string("mha_forward") : "mha_forward_" + impl) + "/" +
                                       shape_name(s) + (nw ? "/need_weights" : "/fused") + (causal ? "/causal" : "");
                    benchmark::RegisterBenchmark(name.c_str(), BM_forward, impl, s, nw, causal)
                        ->Unit(benchmark::kMillisecond)
                        ->UseRealTime();
                }
            }
        }
        std::string name = "openblas_sgemm/rows" + std::to_string(s.N * s.L) + "_E" + std::to_string(s.E);
        benchmark::RegisterBenchmark(name.c_str(), BM_sgemm, s.N * s.L, s.E)->Unit(benchmark::kMillisecond)->UseRealTime();
    }
}

}  // namespace

int main(int argc, char **argv) {
#ifdef HMHA_BENCH_OPENMP
    // The BLAS baseline's OpenMP softmax threads must not spin while OpenBLAS's
    // threads work (2-4x slower on 2 cores otherwise). libgomp reads the policy
    // once, when it loads: so set it and start again.
    if (!std::getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
#endif
    Args a = parse(argc, argv);
    try {
        check_mode(a);
        if (a.has("hmha-device")) g_device = hmha::parse_device(a.get("hmha-device"));
        if (a.has("scratch")) g_scratch = hmha::parse_scratch(a.get("scratch"));
        g_batch_chunk = number<int64_t>(a, "batch-chunk", 0, 0, "a batch count (0 = auto)");
        if (a.has("gpu-attention")) g_gpu_attention = hmha::parse_gpu_attention(a.get("gpu-attention"));
        g_per_head_weights = a.has("per-head-weights");
        if (a.has("case")) return run_case(a);
        if (a.has("sgemm")) return run_sgemm(a);
        if (a.has("fma-peak")) return run_fma_peak();
        if (a.has("list")) return run_list();
        if (a.has("kernel")) return run_kernel(a);
    } catch (const UsageError &e) {
        std::cerr << "hmha_bench: " << e.what() << "\n";
        return 2;
    } catch (const std::bad_alloc &) {
        std::cerr << "hmha_bench: out of memory (the shape's inputs, outputs and scratch do not fit)\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "hmha_bench: " << e.what() << "\n";
        return 1;
    }
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (std::string(argv[i]).rfind("--hmha-device", 0) == 0) {
            if (std::string(argv[i]) == "--hmha-device" && i + 1 < argc) i++;
            continue;
        }
        argv[kept++] = argv[i];
    }
    argc = kept;
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
