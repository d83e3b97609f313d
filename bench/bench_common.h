// Shared by the bench driver and the C++ peers: shapes, the FLOP formula, the
// deterministic inputs every implementation gets, timing and memory probes.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <dlfcn.h>

namespace hmha_bench {

struct Shape {
    int64_t N, L, S, E, H;
    int64_t D() const { return E / H; }
};

// The one FLOP formula of every table: four projections (q and out over L rows,
// k and v over S rows) and the two attention matmuls, halved when causal.
inline double flops(const Shape &s, bool causal) {
    double proj = 2.0 * s.N * s.E * s.E * (2.0 * s.L + 2.0 * s.S);
    double attn = 4.0 * s.N * s.L * s.S * s.E;
    return proj + (causal ? attn / 2 : attn);
}

inline std::vector<float> random_floats(size_t n, float scale, uint32_t seed) {
    std::vector<float> v(n);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, scale);
    for (auto &x : v) x = nd(rng);
    return v;
}

// nn.MultiheadAttention's parameters (PyTorch layout: weights are (out, in)).
struct MhaWeights {
    int64_t E = 0;
    std::vector<float> in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias;  // (3E, E), (3E), (E, E), (E)
    const float *wq() const { return in_proj_weight.data(); }
    const float *wk() const { return in_proj_weight.data() + E * E; }
    const float *wv() const { return in_proj_weight.data() + 2 * E * E; }
    const float *bq() const { return in_proj_bias.data(); }
    const float *bk() const { return in_proj_bias.data() + E; }
    const float *bv() const { return in_proj_bias.data() + 2 * E; }
};

inline MhaWeights make_weights(int64_t E) {
    MhaWeights w;
    w.E = E;
    float ws = 1.0f / std::sqrt((float)E);
    w.in_proj_weight = random_floats((size_t)(3 * E * E), ws, 11);
    w.in_proj_bias = random_floats((size_t)(3 * E), 0.1f, 12);
    w.out_proj_weight = random_floats((size_t)(E * E), ws, 13);
    w.out_proj_bias = random_floats((size_t)E, 0.1f, 14);
    return w;
}

// Inputs, batch_first: query (N, L, E); key = value (N, S, E). Self-attention
// (S == L and not cross) passes the query as key and value, as PyTorch users do.
struct MhaInputs {
    std::vector<float> query, kv;
    bool self = true;
    const float *key() const { return self ? query.data() : kv.data(); }
};

inline MhaInputs make_inputs(const Shape &s, bool cross) {
    MhaInputs in;
    in.query = random_floats((size_t)(s.N * s.L * s.E), 1.0f, 21);
    in.self = !cross;
    if (cross) in.kv = random_floats((size_t)(s.N * s.S * s.E), 1.0f, 22);
    return in;
}

// Bytes of what the caller must hold anyway: the inputs (one tensor for
// self-attention, query + key (= value) for cross), the output (and the
// weights when need_weights: averaged (N, L, S), or per head (N, H, L, S))
// and the module's parameters.
inline double essential_bytes(const Shape &s, bool cross, bool need_weights, bool per_head_weights = false) {
    const double weights = (double)s.N * s.L * s.S * (per_head_weights ? s.H : 1);
    double in = (double)s.N * s.L * s.E + (cross ? (double)s.N * s.S * s.E : 0.0);
    double out = (double)s.N * s.L * s.E + (need_weights ? weights : 0.0);
    double params = 4.0 * s.E * s.E + 4.0 * s.E;
    return 4.0 * (in + out + params);
}

// ---- memory: this process's resident set (Linux /proc) -----------------------

inline int64_t proc_status_kb(const char *key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    size_t n = std::strlen(key);
    while (std::getline(f, line)) {
        if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') {
            return std::stoll(line.substr(n + 1));
        }
    }
    return -1;
}
inline int64_t rss_bytes() { return proc_status_kb("VmRSS") * 1024; }
inline int64_t peak_rss_bytes() { return proc_status_kb("VmHWM") * 1024; }

// ---- memory: an NVIDIA GPU's (NVML, loaded at run time) ----------------------

// Device memory in use on NVIDIA GPU 0, all processes (the GPU machine runs one),
// in bytes; -1 where NVML is missing (no NVIDIA driver) or fails. The bench
// links no GPU library: libnvidia-ml comes with the driver.
inline int64_t nvidia_gpu_used_bytes() {
    struct Memory {
        unsigned long long total, free, used;  // nvmlMemory_t
    };
    using Init = int (*)();
    using Handle = int (*)(unsigned, void **);
    using Info = int (*)(void *, Memory *);
    static void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    static Init init = lib ? (Init)dlsym(lib, "nvmlInit_v2") : nullptr;
    static Handle handle = lib ? (Handle)dlsym(lib, "nvmlDeviceGetHandleByIndex_v2") : nullptr;
    static Info info = lib ? (Info)dlsym(lib, "nvmlDeviceGetMemoryInfo") : nullptr;
    static bool ready = init && handle && info && init() == 0;
    void *dev = nullptr;
    Memory m{};
    if (!ready || handle(0, &dev) != 0 || info(dev, &m) != 0) return -1;
    return (int64_t)m.used;
}

// Resets the peak (VmHWM) to the current RSS (Linux >= 4.0), so that a peak read
// later covers only what happened after this call.
inline bool reset_peak_rss() {
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
    f.flush();
    return (bool)f;
}

// ---- timing --------------------------------------------------------------------

struct Timing {
    double median_ms = 0, min_ms = 0, max_ms = 0;
    int reps = 0, warmup = 0;
};

// Warm-up: at least `warmup` untimed runs and 0.25 s of them (caches, allocator,
// thread pools, clocks settle); then repetitions until at least `min_reps` runs
// and `min_seconds` of timed work (at most `max_reps`); the median of the timed
// runs. bench/peers/torch_mha.py does the same.
inline Timing time_runs(const std::function<void()> &fn, int warmup, int min_reps, int max_reps,
                        double min_seconds, double warm_seconds = 0.25) {
    using clock = std::chrono::steady_clock;
    int warm = 0;
    for (auto w0 = clock::now();
         warm < warmup || std::chrono::duration<double>(clock::now() - w0).count() < warm_seconds; warm++) {
        fn();
    }
    std::vector<double> ms;
    double total = 0;
    while ((int)ms.size() < max_reps && ((int)ms.size() < min_reps || total < min_seconds)) {
        auto t0 = clock::now();
        fn();
        double dt = std::chrono::duration<double>(clock::now() - t0).count();
        ms.push_back(dt * 1e3);
        total += dt;
    }
    Timing t;
    t.reps = (int)ms.size();
    t.warmup = warm;
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    size_t n = sorted.size();
    t.median_ms = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    t.min_ms = sorted.front();
    t.max_ms = sorted.back();
    return t;
}

// ---- comparing outputs -----------------------------------------------------------

struct Diff {
    double max_abs = 0, max_ref = 0;
    double rel() const { return max_abs / std::max(max_ref, 1e-30); }
};

inline void accumulate_diff(Diff &d, const float *got, const float *ref, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double a = std::fabs((double)got[i] - (double)ref[i]);
        if (!(a <= d.max_abs)) d.max_abs = std::isnan(a) ? INFINITY : a;
        d.max_ref = std::max(d.max_ref, (double)std::fabs(ref[i]));
    }
}

inline Diff diff(const float *got, const float *ref, size_t n) {
    Diff d;
    accumulate_diff(d, got, ref, n);
    return d;
}

// Compares with a raw float32 file, streaming, so that a check costs no memory.
inline bool diff_file(Diff &d, const float *got, size_t n, const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::vector<float> buf(1 << 18);
    size_t done = 0;
    while (done < n) {
        size_t k = std::min(buf.size(), n - done);
        if (!f.read(reinterpret_cast<char *>(buf.data()), (std::streamsize)(k * sizeof(float)))) return false;
        accumulate_diff(d, got + done, buf.data(), k);
        done += k;
    }
    return true;
}

inline void write_file(const std::string &path, const float *data, size_t n) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char *>(data), (std::streamsize)(n * sizeof(float)));
    f.close();
    if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace hmha_bench
