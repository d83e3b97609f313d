// The `hmha` command (SPEC.md §4). Every failure ends as exactly one line on
// stderr and a non-zero exit, and the output file is only ever written whole
// (safetensors::save renames a complete temporary into place), so scripts can
// trust that an output file, if present, is the result of a successful run.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "hmha/hmha.h"
#include "hmha/safetensors.h"

namespace {

namespace fs = std::filesystem;
using TensorMap = std::map<std::string, hmha::Tensor>;

// A bad command line: exits 2 (like most Unix tools), other failures exit 1,
// so scripts can tell "you called it wrong" from "the data is wrong".
class UsageError : public hmha::Error {
public:
    using hmha::Error::Error;
};

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

const char *const kMainUsage = R"(usage: hmha <command> [options]

Multi-head attention with torch.nn.MultiheadAttention semantics (eval mode),
computed by Halide-generated kernels. Tensors are read from and written to
.safetensors files.

commands:
  run       compute attention from a weights file and an inputs file
  inspect   list the tensors of .safetensors files with a few values
  compare   check one .safetensors file against an expected one

Run 'hmha <command> --help' for the options of a command.
Exit status: 0 success, 1 failure, 2 bad command line.
)";

const char *const kRunUsage = R"(usage: hmha run --weights W.safetensors --inputs I.safetensors --output O.safetensors
                --num-heads H [options]

Computes attn_output, attn_output_weights = mha(query, key, value, ...) as
torch.nn.MultiheadAttention does in eval mode.

required:
  --weights FILE    the module's state_dict (in_proj_weight, out_proj.weight, ...,
                    as written by safetensors.torch.save_file); embed_dim, kdim,
                    vdim, bias and add_bias_kv follow from its tensors
  --inputs FILE     query, key, value and optionally key_padding_mask, attn_mask
                    (BOOL masks: true = may NOT attend; F32 masks are added)
  --output FILE     receives attn_output and, with --need-weights,
                    attn_output_weights (F32)
  --num-heads H     number of heads; must divide embed_dim

options (booleans take --x, --x=true or --x=false; defaults in brackets):
  --batch-first               tensors are (N, L, E) instead of (L, N, E)  [false]
  --add-zero-attn             append an all-zero key/value position      [false]
  --need-weights              also write attn_output_weights             [true]
  --average-attn-weights      average the weights over the heads         [true]
  --is-causal                 key j is hidden from query i when j > i    [false]
  --device cpu|cuda|opencl    where the kernels run                      [cpu]
  --scratch auto|sequence|per-head
                              memory policy without weights (hmha.h)     [auto]
  --batch-chunk B             batches per pass of the sequence policy    [auto]
                              (CPU; hmha.h)
  --gpu-attention fused|unfused
                              need_weights=false on a GPU (hmha.h)       [fused]
  --dropout P                 accepted for compatibility, no effect      [0]
  --verbose                   print the shapes and the forward time
  -h, --help                  print this help

Valued options take '--opt VALUE' or '--opt=VALUE'. On any error the exit
status is non-zero, one line on stderr says why, and OUTPUT is not written
(a file already there keeps its contents).
)";

const char *const kInspectUsage = R"(usage: hmha inspect FILE.safetensors [FILE...]

Prints each tensor's name, dtype, shape and first values. F16 and BF16 tensors
are shown as the float32 values they load as.
)";

const char *const kCompareUsage = R"(usage: hmha compare ACTUAL.safetensors EXPECTED.safetensors [--rtol R] [--atol A]

Compares every tensor of EXPECTED with the tensor of the same name in ACTUAL
(tensors only in ACTUAL are ignored). An element passes when
|actual - expected| <= atol + rtol * |expected|; NaN matches only NaN.
Prints the max abs and rel error per tensor; exits 0 when all pass, 1 otherwise.

options:
  --rtol R    relative tolerance  [1e-4]
  --atol A    absolute tolerance  [1e-5]
)";

// ---- command-line parsing ---------------------------------------------------

size_t edit_distance(const std::string &a, const std::string &b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); j++) row[j] = j;
    for (size_t i = 1; i <= a.size(); i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); j++) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

struct Parsed {
    std::map<std::string, std::string> values;
    std::map<std::string, bool> flags;
    std::vector<std::string> positionals;
    // A boolean written as '--x false' leaves 'false' as a positional; this
    // remembers the flag so that the error can suggest '--x=false'.
    std::map<size_t, std::string> flag_before_positional;
};

struct OptionSpec {
    std::string command;  // "run", for messages
    std::set<std::string> valued;
    std::set<std::string> boolean;
};

[[noreturn]] void unknown_option(const OptionSpec &spec, const std::string &name) {
    std::string best;
    size_t best_d = 3;  // suggest only close misspellings
    for (const auto *group : {&spec.valued, &spec.boolean}) {
        for (const std::string &o : *group) {
            size_t d = edit_distance(name, o);
            if (d < best_d) {
                best_d = d;
                best = o;
            }
        }
    }
    std::string msg = "unknown option '" + name + "' for 'hmha " + spec.command + "'";
    if (!best.empty()) msg += " (did you mean '" + best + "'?)";
    throw UsageError(msg + "; see 'hmha " + spec.command + " --help'");
}

Parsed parse_options(const std::vector<std::string> &args, const OptionSpec &spec) {
    Parsed p;
    std::string last_bare_flag;
    bool options_done = false;
    for (size_t i = 0; i < args.size(); i++) {
        const std::string &a = args[i];
        if (options_done || a.size() < 2 || a[0] != '-' || (a[1] != '-' && !std::isalpha((unsigned char)a[1]))) {
            if (!last_bare_flag.empty()) p.flag_before_positional[p.positionals.size()] = last_bare_flag;
            p.positionals.push_back(a);
            last_bare_flag.clear();
            continue;
        }
        last_bare_flag.clear();
        if (a == "--") {
            options_done = true;
            continue;
        }
        size_t eq = a.find('=');
        std::string name = a.substr(0, eq);
        std::optional<std::string> inline_value;
        if (eq != std::string::npos) inline_value = a.substr(eq + 1);

        if (spec.valued.count(name)) {
            if (p.values.count(name)) throw UsageError(name + ": given more than once");
            std::string value;
            if (inline_value) {
                value = *inline_value;
            } else if (i + 1 >= args.size()) {
                throw UsageError(name + ": expected a value after it, got the end of the command line");
            } else if (args[i + 1].rfind("--", 0) == 0) {
                throw UsageError(name + ": expected a value after it, got option '" + args[i + 1] + "'");
            } else {
                value = args[++i];
            }
            if (value.empty()) throw UsageError(name + ": expected a value, got ''");
            p.values[name] = value;
        } else if (spec.boolean.count(name)) {
            if (p.flags.count(name)) throw UsageError(name + ": given more than once");
            bool v = true;
            if (inline_value) {
                if (*inline_value == "true") {
                    v = true;
                } else if (*inline_value == "false") {
                    v = false;
                } else {
                    throw UsageError(name + ": expected true or false, got '" + *inline_value + "'");
                }
            } else {
                last_bare_flag = name;
            }
            p.flags[name] = v;
        } else {
            unknown_option(spec, name);
        }
    }
    return p;
}

void reject_positionals(const Parsed &p, const std::string &command) {
    if (p.positionals.empty()) return;
    const std::string &a = p.positionals.front();
    std::string msg = "unexpected argument '" + a + "' for 'hmha " + command + "'";
    auto it = p.flag_before_positional.find(0);
    if (it != p.flag_before_positional.end() && (a == "true" || a == "false")) {
        msg += " (boolean options take '" + it->second + "=" + a + "')";
    }
    throw UsageError(msg);
}

const std::string &require_value(const Parsed &p, const std::string &name, const std::string &what) {
    auto it = p.values.find(name);
    if (it == p.values.end())
        throw UsageError("missing required option " + name + " (expected " + name + " " + what + ")");
    return it->second;
}

bool flag(const Parsed &p, const std::string &name, bool default_value) {
    auto it = p.flags.find(name);
    return it == p.flags.end() ? default_value : it->second;
}

int64_t parse_positive_int(const std::string &name, const std::string &s) {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v <= 0) {
        throw UsageError(name + ": expected a positive integer, got '" + s + "'");
    }
    return v;
}

double parse_double(const std::string &name, const std::string &s, double lo, double hi, const std::string &expect) {
    double v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v) || v < lo || v > hi) {
        throw UsageError(name + ": expected " + expect + ", got '" + s + "'");
    }
    return v;
}

bool wants_help(const std::vector<std::string> &args) {
    for (const std::string &a : args) {
        if (a == "--") return false;
        if (a == "-h" || a == "--help") return true;
    }
    return false;
}

// Loads a file named by an option; the option is put in front of the message
// so that the user knows which argument to fix.
TensorMap load_arg(const std::string &option, const std::string &path) {
    try {
        return hmha::safetensors::load(path);
    } catch (const hmha::Error &e) {
        throw hmha::Error(option + ": " + e.what());
    }
}

std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

std::string fmt_ms(double ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", ms);
    return buf;
}

const char *bool_text(bool b) {
    return b ? "true" : "false";
}

// A choice the library parses (hmha::parse_device, parse_scratch,
// parse_gpu_attention): its error ("device: expected one of cpu, cuda, opencl,
// got 'tpu'") names the Options field, so the usage error only spells it as
// the flag ("gpu_attention" -> "--gpu-attention").
template <typename T>
T parse_choice(const Parsed &p, const std::string &flag, T fallback, T (*parse)(const std::string &)) {
    auto it = p.values.find(flag);
    if (it == p.values.end()) return fallback;
    try {
        return parse(it->second);
    } catch (const hmha::Error &e) {
        std::string msg = e.what();
        std::replace(msg.begin(), msg.begin() + (long)std::min(msg.find(':'), msg.size()), '_', '-');
        throw UsageError("--" + msg);
    }
}

// ---- hmha run ---------------------------------------------------------------

int cmd_run(const std::vector<std::string> &args) {
    if (wants_help(args)) {
        std::cout << kRunUsage;
        return 0;
    }
    OptionSpec spec{
        "run",
        {"--weights", "--inputs", "--output", "--num-heads", "--device", "--scratch", "--batch-chunk", "--dropout",
         "--gpu-attention"},
        {"--batch-first", "--add-zero-attn", "--need-weights", "--average-attn-weights", "--is-causal", "--verbose"}};
    Parsed p = parse_options(args, spec);
    reject_positionals(p, "run");

    // Everything about the command line is checked before any file is read,
    // so a typo is reported at once, not after loading large weights.
    const std::string weights_path = require_value(p, "--weights", "FILE.safetensors");
    const std::string inputs_path = require_value(p, "--inputs", "FILE.safetensors");
    const std::string output_path = require_value(p, "--output", "FILE.safetensors");
    const int64_t num_heads = parse_positive_int("--num-heads", require_value(p, "--num-heads", "H"));
    const hmha::Device device = parse_choice(p, "--device", hmha::Device::CPU, hmha::parse_device);
    const hmha::Scratch scratch = parse_choice(p, "--scratch", hmha::Scratch::Auto, hmha::parse_scratch);
    const hmha::GpuAttention gpu_attention =
        parse_choice(p, "--gpu-attention", hmha::GpuAttention::Fused, hmha::parse_gpu_attention);
    const int64_t batch_chunk =
        p.values.count("--batch-chunk") ? parse_positive_int("--batch-chunk", p.values.at("--batch-chunk")) : 0;
    double dropout = 0.0;
    if (p.values.count("--dropout")) {
        dropout = parse_double("--dropout", p.values.at("--dropout"), 0.0, 1.0, "a probability in [0, 1]");
    }
    const bool verbose = flag(p, "--verbose", false);

    // Checked up front too: otherwise a typo in the output directory would
    // only surface after the whole computation.
    {
        std::error_code ec;
        fs::path out(output_path);
        if (fs::is_directory(out, ec)) {
            throw hmha::Error("--output '" + output_path + "': is a directory, expected a file name");
        }
        fs::path parent = out.parent_path();
        if (!parent.empty() && !fs::is_directory(parent, ec)) {
            throw hmha::Error("--output '" + output_path + "': directory '" + parent.string() + "' does not exist");
        }
    }

    TensorMap weights = load_arg("--weights", weights_path);
    TensorMap inputs = load_arg("--inputs", inputs_path);

    // An unknown name is almost always a misspelt mask; ignoring it would run
    // without the mask and silently give wrong results.
    static const std::set<std::string> kInputNames = {"query", "key", "value", "key_padding_mask", "attn_mask"};
    for (const auto &[name, t] : inputs) {
        if (!kInputNames.count(name)) {
            throw hmha::Error("--inputs '" + inputs_path + "': unexpected tensor '" + name +
                              "' (expected query, key, value and optionally key_padding_mask, attn_mask)");
        }
    }
    for (const char *name : {"query", "key", "value"}) {
        if (!inputs.count(name)) {
            std::string found;
            for (const auto &kv : inputs) found += (found.empty() ? "'" : ", '") + kv.first + "'";
            throw hmha::Error("--inputs '" + inputs_path + "': missing tensor '" + name +
                              "' (expected query, key, value; found " + (found.empty() ? "no tensors" : found) + ")");
        }
    }

    hmha::Options opt;
    try {
        opt = hmha::Options::from_state_dict(weights, num_heads);
    } catch (const hmha::Error &e) {
        throw hmha::Error("--weights '" + weights_path + "': " + e.what());
    }
    // The runtime would reject this too, but only the CLI knows which flag to blame.
    if (opt.embed_dim > 0 && opt.embed_dim % num_heads != 0) {
        throw UsageError("--num-heads: expected a divisor of embed_dim=" + std::to_string(opt.embed_dim) +
                         " (from --weights), got num_heads=" + std::to_string(num_heads));
    }
    opt.batch_first = flag(p, "--batch-first", false);
    opt.add_zero_attn = flag(p, "--add-zero-attn", false);
    opt.device = device;
    opt.scratch = scratch;
    opt.batch_chunk = batch_chunk;
    opt.gpu_attention = gpu_attention;
    opt.dropout = dropout;
    hmha::MultiheadAttention mha(opt, weights);

    hmha::ForwardOptions fwd;
    fwd.need_weights = flag(p, "--need-weights", true);
    fwd.average_attn_weights = flag(p, "--average-attn-weights", true);
    fwd.is_causal = flag(p, "--is-causal", false);
    if (inputs.count("key_padding_mask")) fwd.key_padding_mask = inputs.at("key_padding_mask");
    if (inputs.count("attn_mask")) fwd.attn_mask = inputs.at("attn_mask");

    auto t0 = std::chrono::steady_clock::now();
    hmha::ForwardResult r = mha.forward(inputs.at("query"), inputs.at("key"), inputs.at("value"), fwd);
    auto t1 = std::chrono::steady_clock::now();

    TensorMap out{{"attn_output", r.attn_output}};
    if (r.attn_output_weights) out.emplace("attn_output_weights", *r.attn_output_weights);
    try {
        hmha::safetensors::save(output_path, out);
    } catch (const hmha::Error &e) {
        throw hmha::Error(std::string("--output: ") + e.what());
    }

    if (verbose) {
        std::cout << "module: embed_dim=" << opt.embed_dim << " num_heads=" << opt.num_heads
                  << " head_dim=" << mha.head_dim() << " kdim=" << (opt.kdim ? opt.kdim : opt.embed_dim)
                  << " vdim=" << (opt.vdim ? opt.vdim : opt.embed_dim) << " bias=" << bool_text(opt.bias)
                  << " add_bias_kv=" << bool_text(opt.add_bias_kv) << " add_zero_attn=" << bool_text(opt.add_zero_attn)
                  << " batch_first=" << bool_text(opt.batch_first) << " device=" << hmha::to_string(opt.device)
                  << " scratch=" << hmha::to_string(opt.scratch)
                  << " batch_chunk=" << (opt.batch_chunk ? std::to_string(opt.batch_chunk) : "auto")
                  << " gpu_attention=" << hmha::to_string(opt.gpu_attention) << "\n";
        std::cout << "forward: need_weights=" << bool_text(fwd.need_weights)
                  << " average_attn_weights=" << bool_text(fwd.average_attn_weights)
                  << " is_causal=" << bool_text(fwd.is_causal) << "\n";
        for (const auto &[name, t] : inputs) {
            std::cout << "  in   " << name << " " << t.shape_str() << " " << hmha::to_string(t.dtype()) << "\n";
        }
        for (const auto &[name, t] : out) {
            std::cout << "  out  " << name << " " << t.shape_str() << " " << hmha::to_string(t.dtype()) << "\n";
        }
        double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
        std::cout << "forward time: " << fmt_ms(ms) << " ms\n";
        std::cout << "wrote " << output_path << "\n";
    }
    return 0;
}

// ---- hmha inspect -----------------------------------------------------------

std::string first_values(const hmha::Tensor &t, int64_t count) {
    std::string s = "[";
    int64_t n = std::min(t.numel(), count);
    for (int64_t i = 0; i < n; i++) {
        if (i) s += ", ";
        if (t.dtype() == hmha::DType::Bool) {
            s += t.at(i) != 0 ? "True" : "False";
        } else {
            s += fmt(t.at(i));
        }
    }
    if (t.numel() > n) s += ", ...";
    return s + "]";
}

int cmd_inspect(const std::vector<std::string> &args) {
    if (wants_help(args)) {
        std::cout << kInspectUsage;
        return 0;
    }
    Parsed p = parse_options(args, OptionSpec{"inspect", {}, {}});
    if (p.positionals.empty()) throw UsageError("inspect: expected a FILE.safetensors argument, got none");
    for (const std::string &path : p.positionals) {
        TensorMap tensors = hmha::safetensors::load(path);
        size_t name_w = 4, shape_w = 5;
        for (const auto &[name, t] : tensors) {
            name_w = std::max(name_w, name.size());
            shape_w = std::max(shape_w, t.shape_str().size());
        }
        std::cout << path << ": " << tensors.size() << (tensors.size() == 1 ? " tensor" : " tensors") << "\n";
        for (const auto &[name, t] : tensors) {
            std::string shape = t.shape_str();
            std::string dtype = hmha::to_string(t.dtype());
            std::cout << "  " << name << std::string(name_w - name.size() + 2, ' ') << dtype
                      << std::string(9 - std::min<size_t>(dtype.size(), 8), ' ') << shape
                      << std::string(shape_w - shape.size() + 2, ' ') << first_values(t, 6) << "\n";
        }
    }
    return 0;
}

// ---- hmha compare -----------------------------------------------------------

struct Diff {
    bool ok = true;
    std::string problem;  // set when the tensors cannot be compared element-wise
    double max_abs = 0, max_rel = 0;
    int64_t bad = 0;
    int64_t worst = -1;  // flat index of the worst failing element
};

Diff diff(const hmha::Tensor &a, const hmha::Tensor &b, double rtol, double atol) {
    Diff d;
    if (a.shape() != b.shape()) {
        d.ok = false;
        d.problem = "shape " + a.shape_str() + ", expected " + b.shape_str();
        return d;
    }
    if (a.dtype() != b.dtype()) {
        d.ok = false;
        d.problem = std::string("dtype ") + hmha::to_string(a.dtype()) + ", expected " + hmha::to_string(b.dtype());
        return d;
    }
    double worst_excess = -1;
    for (int64_t i = 0; i < b.numel(); i++) {
        double x = a.at(i), y = b.at(i);
        if (std::isnan(x) || std::isnan(y)) {
            if (std::isnan(x) && std::isnan(y)) continue;
            d.bad++;
            if (worst_excess < INFINITY) {
                worst_excess = INFINITY;
                d.worst = i;
            }
            d.max_abs = NAN;
            continue;
        }
        if (x == y) continue;  // also equal infinities, whose difference is NaN
        double err = std::abs(x - y);
        if (!std::isnan(d.max_abs)) d.max_abs = std::max(d.max_abs, err);
        if (y != 0) d.max_rel = std::max(d.max_rel, err / std::abs(y));
        double excess = err - (atol + rtol * std::abs(y));
        if (std::isnan(excess)) excess = INFINITY;  // inf - inf: an infinity against a finite value
        if (excess > 0) {
            d.bad++;
            if (d.worst < 0 || excess > worst_excess) {
                worst_excess = excess;
                d.worst = i;
            }
        }
    }
    d.ok = d.bad == 0;
    return d;
}

std::string index_str(const std::vector<int64_t> &shape, int64_t flat) {
    std::vector<int64_t> idx(shape.size());
    for (size_t k = shape.size(); k-- > 0;) {
        idx[k] = flat % shape[k];
        flat /= shape[k];
    }
    std::string s = "[";
    for (size_t k = 0; k < idx.size(); k++) s += (k ? ", " : "") + std::to_string(idx[k]);
    return s + "]";
}

int cmd_compare(const std::vector<std::string> &args) {
    if (wants_help(args)) {
        std::cout << kCompareUsage;
        return 0;
    }
    Parsed p = parse_options(args, OptionSpec{"compare", {"--rtol", "--atol"}, {}});
    if (p.positionals.size() != 2) {
        throw UsageError("compare: expected 2 files (ACTUAL EXPECTED), got " + std::to_string(p.positionals.size()));
    }
    const double inf = INFINITY;
    double rtol = 1e-4, atol = 1e-5;
    if (p.values.count("--rtol")) rtol = parse_double("--rtol", p.values.at("--rtol"), 0, inf, "a number >= 0");
    if (p.values.count("--atol")) atol = parse_double("--atol", p.values.at("--atol"), 0, inf, "a number >= 0");
    const std::string &actual_path = p.positionals[0];
    const std::string &expected_path = p.positionals[1];
    TensorMap actual = hmha::safetensors::load(actual_path);
    TensorMap expected = hmha::safetensors::load(expected_path);

    std::cout << "compare " << actual_path << " against expected " << expected_path << " (rtol=" << fmt(rtol)
              << ", atol=" << fmt(atol) << ")\n";
    size_t name_w = 4, shape_w = 5;
    for (const auto &kv : expected) {
        name_w = std::max(name_w, kv.first.size());
        shape_w = std::max(shape_w, kv.second.shape_str().size());
    }
    int failed = 0;
    for (const auto &[name, want] : expected) {
        std::cout << "  " << name << std::string(name_w - name.size() + 2, ' ');
        auto it = actual.find(name);
        if (it == actual.end()) {
            std::cout << "FAIL  missing in " << actual_path << "\n";
            failed++;
            continue;
        }
        Diff d = diff(it->second, want, rtol, atol);
        if (!d.problem.empty()) {
            std::cout << "FAIL  " << d.problem << "\n";
            failed++;
            continue;
        }
        std::string shape = want.shape_str();
        std::cout << (d.ok ? "ok    " : "FAIL  ") << shape << std::string(shape_w - shape.size() + 2, ' ')
                  << "max abs err " << fmt(d.max_abs) << "  max rel err " << fmt(d.max_rel);
        if (!d.ok) {
            std::cout << "  (" << d.bad << " of " << want.numel() << " elements out of tolerance; worst at "
                      << index_str(want.shape(), d.worst) << ": " << fmt(it->second.at(d.worst)) << " vs expected "
                      << fmt(want.at(d.worst)) << ")";
            failed++;
        }
        std::cout << "\n";
    }
    if (expected.empty()) std::cout << "  (no tensors in " << expected_path << ")\n";
    if (failed) {
        std::cout << "FAIL: " << failed << " of " << expected.size() << " tensors differ\n";
        return kExitFailure;
    }
    std::cout << "OK: all " << expected.size() << " tensors match\n";
    return 0;
}

// ---- dispatch ---------------------------------------------------------------

int dispatch(const std::vector<std::string> &args) {
    if (args.empty()) {
        throw UsageError("missing command (expected run, inspect or compare); see 'hmha --help'");
    }
    const std::string &cmd = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (cmd == "-h" || cmd == "--help") {
        std::cout << kMainUsage;
        return 0;
    }
    if (cmd == "help") {
        if (rest.empty()) {
            std::cout << kMainUsage;
            return 0;
        }
        return dispatch({rest[0], "--help"});
    }
    if (cmd == "run") return cmd_run(rest);
    if (cmd == "inspect") return cmd_inspect(rest);
    if (cmd == "compare") return cmd_compare(rest);
    throw UsageError("unknown command '" + cmd + "' (expected run, inspect or compare); see 'hmha --help'");
}

// The contract is one line on stderr; runtime messages could in principle
// carry newlines (e.g. from a JSON parser), so flatten them.
void print_error(const std::string &msg) {
    std::string line = msg;
    std::replace_if(
        line.begin(), line.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    std::cout.flush();
    std::cerr << "hmha: error: " << line << std::endl;
}

}  // namespace

int main(int argc, char **argv) {
    try {
        std::vector<std::string> args(argv + 1, argv + argc);
        return dispatch(args);
    } catch (const UsageError &e) {
        print_error(e.what());
        return kExitUsage;
    } catch (const std::bad_alloc &) {
        print_error("out of memory");
        return kExitFailure;
    } catch (const std::exception &e) {
        print_error(e.what());
        return kExitFailure;
    } catch (...) {
        print_error("unknown internal error");
        return kExitFailure;
    }
}
