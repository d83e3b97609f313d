// safetensors I/O and the `hmha` command line (SPEC.md §3, §4): round trips,
// F16/BF16 decoding on exact bit patterns, every kind of malformed file, and
// the CLI end to end against an in-process forward on the same data, plus
// every CLI error path (one stderr line naming the argument, no output file).
#include <hmha/hmha.h>
#include <hmha/safetensors.h>
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <sstream>

extern char **environ;

namespace {

namespace fs = std::filesystem;
using TensorMap = std::map<std::string, hmha::Tensor>;

// A fresh directory per test, removed afterwards, so tests cannot see each
// other's files and "nothing was left behind" can be checked by listing it.
class TempDir {
public:
    TempDir() {
        static std::atomic<int> counter{0};
        path_ = fs::temp_directory_path() /
                ("hmha_test_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::remove_all(path_);
        fs::create_directories(path_ / "data");
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;

    // Where test files live; the CLI's captured stdout/stderr are kept outside it.
    fs::path data() const { return path_ / "data"; }
    std::string file(const std::string &name) const { return (data() / name).string(); }
    fs::path root() const { return path_; }

private:
    fs::path path_;
};

std::set<std::string> listing(const fs::path &dir) {
    std::set<std::string> names;
    for (const auto &e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
}

std::string read_file(const fs::path &p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void write_file(const fs::path &p, const std::string &bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(bytes.data(), (std::streamsize)bytes.size());
}

std::string le64(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; i++) s[i] = char((v >> (8 * i)) & 0xff);
    return s;
}

// A safetensors file from its parts, for crafting valid and broken files.
void write_raw(const fs::path &p, const std::string &header, const std::string &data) {
    write_file(p, le64(header.size()) + header + data);
}

std::string u16_bytes(const std::vector<uint16_t> &v) {
    std::string s;
    for (uint16_t x : v) {
        s += char(x & 0xff);
        s += char(x >> 8);
    }
    return s;
}

std::string error_of(const std::function<void()> &f) {
    try {
        f();
    } catch (const hmha::Error &e) {
        return e.what();
    } catch (const std::exception &e) {
        return std::string("NOT hmha::Error: ") + e.what();
    }
    return "NO ERROR";
}

bool same_bits(const hmha::Tensor &a, const hmha::Tensor &b) {
    return a.shape() == b.shape() && a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
           (a.nbytes() == 0 || std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0);
}

hmha::Tensor random_tensor(std::mt19937 &rng, std::vector<int64_t> shape, float scale = 1.0f) {
    hmha::Tensor t(std::move(shape));
    std::uniform_real_distribution<float> dist(-scale, scale);
    for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = dist(rng);
    return t;
}

hmha::Tensor random_bools(std::mt19937 &rng, std::vector<int64_t> shape, double p_true) {
    hmha::Tensor t(std::move(shape), hmha::DType::Bool);
    std::bernoulli_distribution dist(p_true);
    for (int64_t i = 0; i < t.numel(); i++) t.bytes()[i] = dist(rng) ? 1 : 0;
    return t;
}

// ---- running the CLI --------------------------------------------------------

// A cross build's tests run under an emulator (qemu-user), which cannot exec
// another target binary by itself: CMake passes its command line, a list of
// string literals each followed by a comma, and the CLI runs through it too.
#ifndef HMHA_CLI_EMULATOR
#define HMHA_CLI_EMULATOR
#endif

struct CliResult {
    int exit_code = -1;
    bool signaled = false;
    std::string out, err;
};

// posix_spawn rather than std::system: no shell quoting, and a crash shows up
// as a signal instead of being folded into an exit code by the shell.
CliResult run_cli(const TempDir &dir, const std::vector<std::string> &args) {
    const std::string out_path = (dir.root() / "cli.stdout").string();
    const std::string err_path = (dir.root() / "cli.stderr").string();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> all{HMHA_CLI_EMULATOR HMHA_CLI_PATH};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char *> argv;
    for (std::string &a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, all[0].c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CliResult r;
    r.signaled = WIFSIGNALED(status);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_file(out_path);
    r.err = read_file(err_path);
    return r;
}

std::string joined(const std::vector<std::string> &args) {
    std::string s = "hmha";
    for (const auto &a : args) s += " " + a;
    return s;
}

// ---- a small module and its inputs -------------------------------------------

struct Problem {
    int64_t E = 8, H = 2, L = 3, S = 5, N = 2;
    int64_t kdim = 8, vdim = 8;
    bool add_bias_kv = false;
    TensorMap weights, inputs;
};

Problem make_problem(uint32_t seed, bool batch_first, bool separate_kv = false) {
    std::mt19937 rng(seed);
    Problem p;
    if (separate_kv) {
        p.kdim = 6;
        p.vdim = 5;
        p.add_bias_kv = true;
        p.weights["q_proj_weight"] = random_tensor(rng, {p.E, p.E}, 0.5f);
        p.weights["k_proj_weight"] = random_tensor(rng, {p.E, p.kdim}, 0.5f);
        p.weights["v_proj_weight"] = random_tensor(rng, {p.E, p.vdim}, 0.5f);
        p.weights["bias_k"] = random_tensor(rng, {1, 1, p.E});
        p.weights["bias_v"] = random_tensor(rng, {1, 1, p.E});
    } else {
        p.weights["in_proj_weight"] = random_tensor(rng, {3 * p.E, p.E}, 0.5f);
    }
    p.weights["in_proj_bias"] = random_tensor(rng, {3 * p.E}, 0.1f);
    p.weights["out_proj.weight"] = random_tensor(rng, {p.E, p.E}, 0.5f);
    p.weights["out_proj.bias"] = random_tensor(rng, {p.E}, 0.1f);
    auto seq = [&](int64_t len, int64_t f) {
        return batch_first ? std::vector<int64_t>{p.N, len, f} : std::vector<int64_t>{len, p.N, f};
    };
    p.inputs["query"] = random_tensor(rng, seq(p.L, p.E));
    p.inputs["key"] = random_tensor(rng, seq(p.S, p.kdim));
    p.inputs["value"] = random_tensor(rng, seq(p.S, p.vdim));
    return p;
}

// What `hmha run` must produce: the same Options the CLI builds, forward in-process.
hmha::ForwardResult in_process(const Problem &p, bool batch_first, bool add_zero_attn, const hmha::ForwardOptions &fo,
                               hmha::Scratch scratch = hmha::Scratch::Auto, int64_t batch_chunk = 0) {
    hmha::Options opt = hmha::Options::from_state_dict(p.weights, p.H);
    opt.batch_first = batch_first;
    opt.add_zero_attn = add_zero_attn;
    opt.scratch = scratch;
    opt.batch_chunk = batch_chunk;
    hmha::MultiheadAttention mha(opt, p.weights);
    return mha.forward(p.inputs.at("query"), p.inputs.at("key"), p.inputs.at("value"), fo);
}

// A valid `hmha run` command line for files W/I/O in dir.
std::vector<std::string> run_args(const TempDir &dir, const std::string &out = "out.safetensors") {
    return {"run",
            "--weights",
            dir.file("w.safetensors"),
            "--inputs",
            dir.file("i.safetensors"),
            "--output",
            dir.file(out),
            "--num-heads",
            "2"};
}

void write_problem(const TempDir &dir, const Problem &p) {
    hmha::safetensors::save(dir.file("w.safetensors"), p.weights);
    hmha::safetensors::save(dir.file("i.safetensors"), p.inputs);
}

}  // namespace

// ============================================================================
// safetensors
// ============================================================================

TEST_CASE("safetensors: F32 and BOOL round trip bit-exactly, with empty and 0-d tensors", "[safetensors]") {
    TempDir dir;
    std::mt19937 rng(1);
    TensorMap in;
    in["a.weight"] = random_tensor(rng, {3, 4});
    in["mask"] = random_bools(rng, {2, 5}, 0.5);
    in["empty"] = hmha::Tensor({0}, hmha::DType::F32);
    in["empty3d"] = hmha::Tensor({2, 0, 3}, hmha::DType::F32);
    in["empty_bool"] = hmha::Tensor({0, 4}, hmha::DType::Bool);
    in["scalar"] = hmha::Tensor::from_floats({}, {3.5f});
    in["specials"] = hmha::Tensor::from_floats(
        {6}, {INFINITY, -INFINITY, -0.0f, std::numeric_limits<float>::denorm_min(), std::nanf(""), 1e38f});
    in["name with \"quotes\" and ü"] = hmha::Tensor::from_floats({1}, {7.0f});
    const std::string path = dir.file("rt.safetensors");
    hmha::safetensors::save(path, in);

    TensorMap out = hmha::safetensors::load(path);
    REQUIRE(out.size() == in.size());
    for (const auto &[name, t] : in) {
        INFO(name);
        REQUIRE(out.count(name));
        CHECK(same_bits(out.at(name), t));
    }
    CHECK(out.at("scalar").dim() == 0);
    CHECK(out.at("scalar").at(0) == 3.5f);
    // Only the file itself: the temporary was renamed, not left beside it.
    CHECK(listing(dir.data()) == std::set<std::string>{"rt.safetensors"});
}

TEST_CASE("safetensors: header is padded to 8 bytes with spaces, as the Python library writes it", "[safetensors]") {
    TempDir dir;
    const std::string path = dir.file("pad.safetensors");
    for (int n = 0; n < 9; n++) {
        // Names of varying length hit every padding amount.
        TensorMap m{{std::string(size_t(n + 1), 'x'), hmha::Tensor::from_floats({2}, {1.0f, 2.0f})}};
        hmha::safetensors::save(path, m);
        std::string bytes = read_file(path);
        REQUIRE(bytes.size() >= 8);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | uint8_t(bytes[size_t(i)]);
        CHECK(hlen % 8 == 0);
        REQUIRE(bytes.size() == 8 + hlen + 8);
        std::string header = bytes.substr(8, hlen);
        CHECK(header.front() == '{');
        CHECK(header.find_last_not_of(' ') == header.rfind('}'));
        CHECK(header.find("\"dtype\":\"F32\"") != std::string::npos);
        CHECK(header.find("\"shape\":[2]") != std::string::npos);
        CHECK(header.find("\"data_offsets\":[0,8]") != std::string::npos);
        float v[2];
        std::memcpy(v, bytes.data() + 8 + hlen, 8);
        CHECK(v[0] == 1.0f);
        CHECK(v[1] == 2.0f);
    }
}

TEST_CASE("safetensors: reads files as safetensors.torch writes them (metadata, key order, padding)", "[safetensors]") {
    TempDir dir;
    std::string header = R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BOOL","shape":[3],"data_offsets":[8,11]},)"
                         R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    header.append((8 - header.size() % 8) % 8, ' ');
    float w[2] = {0.25f, -4.0f};
    std::string data(reinterpret_cast<const char *>(w), 8);
    data += std::string("\x00\x01\x02", 3);  // a nonzero byte other than 1 still means true
    write_raw(dir.data() / "torch.safetensors", header, data);
    TensorMap m = hmha::safetensors::load(dir.file("torch.safetensors"));
    REQUIRE(m.size() == 2);
    CHECK(m.at("w").dtype() == hmha::DType::F32);
    CHECK(m.at("w").at(0) == 0.25f);
    CHECK(m.at("w").at(1) == -4.0f);
    REQUIRE(m.at("b").dtype() == hmha::DType::Bool);
    CHECK(m.at("b").bytes()[0] == 0);
    CHECK(m.at("b").bytes()[1] == 1);
    CHECK(m.at("b").bytes()[2] == 1);
}

TEST_CASE("safetensors: F16 widens to F32 exactly (subnormals, infinities, NaN, signed zero)", "[safetensors]") {
    TempDir dir;
    struct Case {
        uint16_t bits;
        float value;
    };
    const Case cases[] = {
        {0x0000, 0.0f},
        {0x3C00, 1.0f},
        {0xC000, -2.0f},
        {0x3555, 0.333251953125f},
        {0x3BFF, 0.99951171875f},
        {0x7BFF, 65504.0f},                  // largest finite half
        {0x0400, std::ldexp(1.0f, -14)},     // smallest normal
        {0x03FF, std::ldexp(1023.0f, -24)},  // largest subnormal
        {0x0001, std::ldexp(1.0f, -24)},     // smallest subnormal
        {0x8001, -std::ldexp(1.0f, -24)},
        {0x0155, std::ldexp(341.0f, -24)},  // a subnormal with a mixed mantissa
        {0x7C00, INFINITY},
        {0xFC00, -INFINITY},
    };
    std::vector<uint16_t> bits;
    for (const Case &c : cases) bits.push_back(c.bits);
    bits.push_back(0x8000);  // -0
    bits.push_back(0x7E00);  // quiet NaN
    bits.push_back(0x7C01);  // signalling NaN: must stay NaN, not become Inf
    bits.push_back(0xFE00);  // negative NaN
    const size_t n = bits.size();
    write_raw(dir.data() / "f16.safetensors",
              R"({"h":{"dtype":"F16","shape":[)" + std::to_string(n) + R"(],"data_offsets":[0,)" +
                  std::to_string(2 * n) + "]}}",
              u16_bytes(bits));
    TensorMap m = hmha::safetensors::load(dir.file("f16.safetensors"));
    const hmha::Tensor &h = m.at("h");
    REQUIRE(h.dtype() == hmha::DType::F32);
    REQUIRE(h.numel() == int64_t(n));
    size_t i = 0;
    for (const Case &c : cases) {
        INFO("bits 0x" << std::hex << c.bits);
        CHECK(std::bit_cast<uint32_t>(h.at(int64_t(i))) == std::bit_cast<uint32_t>(c.value));
        i++;
    }
    CHECK(h.at(int64_t(i)) == 0.0f);
    CHECK(std::signbit(h.at(int64_t(i))));
    CHECK(std::isnan(h.at(int64_t(i + 1))));
    CHECK(std::isnan(h.at(int64_t(i + 2))));
    CHECK(std::isnan(h.at(int64_t(i + 3))));
}

TEST_CASE("safetensors: BF16 widens to F32 exactly", "[safetensors]") {
    TempDir dir;
    const std::vector<uint16_t> bits = {0x3F80, 0xC0A0, 0x3EAB, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x8000, 0x7FC0};
    write_raw(dir.data() / "bf16.safetensors", R"({"b":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,18]}})",
              u16_bytes(bits));
    const hmha::Tensor b = hmha::safetensors::load(dir.file("bf16.safetensors")).at("b");
    REQUIRE(b.shape() == std::vector<int64_t>{3, 3});
    REQUIRE(b.dtype() == hmha::DType::F32);
    CHECK(b.at(0) == 1.0f);
    CHECK(b.at(1) == -5.0f);
    CHECK(b.at(2) == 0.333984375f);
    CHECK(std::bit_cast<uint32_t>(b.at(3)) == 0x7F7F0000u);  // largest finite bf16
    CHECK(std::bit_cast<uint32_t>(b.at(4)) == 0x00010000u);  // a float32 subnormal
    CHECK(b.at(5) == INFINITY);
    CHECK(b.at(6) == -INFINITY);
    CHECK((b.at(7) == 0.0f && std::signbit(b.at(7))));
    CHECK(std::isnan(b.at(8)));
}

TEST_CASE("safetensors: every malformed file gives hmha::Error naming the file and the problem", "[safetensors]") {
    TempDir dir;
    struct Bad {
        const char *what;
        std::string bytes;   // whole file
        const char *expect;  // in the message
    };
    const std::string f32x4(16, '\0');
    auto file = [](const std::string &header, const std::string &data) { return le64(header.size()) + header + data; };
    const std::vector<Bad> cases = {
        {"empty file", "", "truncated"},
        {"7 bytes", std::string("\x10\0\0\0\0\0\0", 7), "truncated"},
        {"header length beyond the file", le64(1000) + "{}", "header length 1000"},
        {"absurd header length", le64(uint64_t(1) << 63) + "{}", "header length"},
        {"zero header length", le64(0) + "xx", "too small"},
        {"invalid JSON", file("{not json}", ""), "JSON"},
        {"truncated JSON", file(R"({"a":{"dtype":"F32")", ""), "JSON"},
        {"header is an array", file("[1,2]", ""), "object"},
        {"entry not an object", file(R"({"a":3})", ""), "tensor 'a'"},
        {"missing dtype", file(R"({"a":{"shape":[4],"data_offsets":[0,16]}})", f32x4), "missing 'dtype'"},
        {"missing shape", file(R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", f32x4), "missing 'shape'"},
        {"missing data_offsets", file(R"({"a":{"dtype":"F32","shape":[4]}})", f32x4), "missing 'data_offsets'"},
        {"unknown dtype", file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", f32x4),
         "unsupported dtype 'F64'"},
        {"integer dtype", file(R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", f32x4),
         "unsupported dtype 'I64'"},
        {"dtype not a string", file(R"({"a":{"dtype":4,"shape":[4],"data_offsets":[0,16]}})", f32x4), "dtype"},
        {"non-integer shape", file(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,16]}})", f32x4), "shape"},
        {"negative shape", file(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", f32x4), "shape"},
        {"string shape", file(R"({"a":{"dtype":"F32","shape":["4"],"data_offsets":[0,16]}})", f32x4), "shape"},
        {"shape not a list", file(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", f32x4), "shape"},
        {"overflowing shape",
         file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", f32x4), "too large"},
        {"offsets beyond the data", file(R"({"a":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}})", f32x4),
         "out of range"},
        {"offsets not matching shape", file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", f32x4),
         "expected 12"},
        {"offsets begin > end", file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})", f32x4),
         "begin > end"},
        {"three offsets", file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8,16]}})", f32x4), "data_offsets"},
        {"negative offset", file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", f32x4), "data_offsets"},
        {"overlapping tensors",
         file(
             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
             f32x4),
         "overlap"},
        {"duplicate names",
         file(
             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
             f32x4),
         "'a' appears more than once"},
        {"duplicate key in an entry",
         file(R"({"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", f32x4), "more than once"},
        {"metadata not an object", file(R"({"__metadata__":3})", ""), "__metadata__"},
        {"data truncated after a valid header",
         file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(10, '\0')), "out of range"},
    };
    for (const Bad &c : cases) {
        INFO(c.what);
        const fs::path p = dir.data() / "bad.safetensors";
        write_file(p, c.bytes);
        std::string msg = error_of([&] { hmha::safetensors::load(p.string()); });
        INFO(msg);
        CHECK(msg.find(p.string()) != std::string::npos);
        CHECK(msg.find(c.expect) != std::string::npos);
    }

    std::string msg = error_of([&] { hmha::safetensors::load(dir.file("does_not_exist.safetensors")); });
    CHECK(msg.find("does_not_exist.safetensors") != std::string::npos);
    CHECK(msg.find("No such file") != std::string::npos);
    msg = error_of([&] { hmha::safetensors::load(dir.data().string()); });
    CHECK(msg.find("directory") != std::string::npos);
}

// Seeded mutations of a valid file (truncations, flipped and overwritten
// bytes in the length, the header and the data, digits and quotes of the JSON
// swapped): each loads (the data bytes are free) or throws hmha::Error naming
// the file; never another exception, a crash or a hang.
TEST_CASE("safetensors: 2000 seeded mutations of a valid file load or give hmha::Error", "[safetensors]") {
    TempDir dir;
    std::string header = R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BOOL","shape":[3],"data_offsets":[8,11]},)"
                         R"("h":{"dtype":"F16","shape":[2,1],"data_offsets":[12,16]},)"
                         R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("z":{"dtype":"BF16","shape":[],"data_offsets":[16,18]}})";
    header.append((8 - header.size() % 8) % 8, ' ');
    const std::string valid = le64(header.size()) + header + std::string(18, '\x01');
    const fs::path p = dir.data() / "mutated.safetensors";
    write_file(p, valid);
    REQUIRE(hmha::safetensors::load(p.string()).size() == 4);

    std::mt19937 rng(20261128);
    const std::string json_chars = "{}[]\":,0123456789-.e ";
    int loaded = 0, refused = 0;
    for (int trial = 0; trial < 2000; trial++) {
        std::string bytes = valid;
        const int edits = 1 + (int)(rng() % 3);
        for (int e = 0; e < edits && !bytes.empty(); e++) {
            const size_t at = rng() % bytes.size();
            switch (rng() % 4) {
                case 0:
                    bytes.resize(at);
                    break;  // truncate
                case 1:
                    bytes[at] = (char)(bytes[at] ^ (1 << (rng() % 8)));
                    break;  // flip a bit
                case 2:
                    bytes[at] = json_chars[rng() % json_chars.size()];
                    break;  // JSON-ish byte
                default:
                    bytes.erase(at, 1 + rng() % 4);
                    break;  // drop bytes
            }
        }
        write_file(p, bytes);
        const std::string msg = error_of([&] { hmha::safetensors::load(p.string()); });
        INFO("trial " << trial << ": " << msg);
        if (msg == "NO ERROR") {
            loaded++;
            continue;
        }
        refused++;
        REQUIRE(msg.rfind("NOT hmha::Error", 0) != 0);
        REQUIRE(msg.find(p.string()) != std::string::npos);
    }
    // Both outcomes occur: the mutations reach past the header into the data.
    CHECK(loaded > 0);
    CHECK(refused > 0);
}

TEST_CASE("safetensors: save replaces a file atomically and leaves nothing behind on failure", "[safetensors]") {
    TempDir dir;
    const TensorMap one{{"x", hmha::Tensor::from_floats({1}, {1.0f})}};
    const TensorMap two{{"y", hmha::Tensor::from_floats({2}, {2.0f, 3.0f})}};
    const std::string path = dir.file("o.safetensors");
    hmha::safetensors::save(path, one);
    hmha::safetensors::save(path, two);
    TensorMap back = hmha::safetensors::load(path);
    CHECK(back.size() == 1);
    CHECK(back.count("y") == 1);

    const std::string before = read_file(path);
    // A reserved name, a tensor without data, a missing directory, a directory as target.
    CHECK_THROWS_AS(hmha::safetensors::save(path, {{"__metadata__", hmha::Tensor::from_floats({1}, {1.0f})}}),
                    hmha::Error);
    CHECK_THROWS_AS(hmha::safetensors::save(path, {{"undef", hmha::Tensor()}}), hmha::Error);
    std::string msg = error_of([&] { hmha::safetensors::save(dir.file("no/such/dir/o.safetensors"), one); });
    CHECK(msg.find("no/such/dir/o.safetensors") != std::string::npos);
    fs::create_directory(dir.data() / "sub");
    msg = error_of([&] { hmha::safetensors::save(dir.file("sub"), one); });
    CHECK(msg.find("sub") != std::string::npos);
    CHECK(read_file(path) == before);
    CHECK(listing(dir.data()) == std::set<std::string>{"o.safetensors", "sub"});
    CHECK(fs::is_empty(dir.data() / "sub"));
}

// ============================================================================
// the hmha command line
// ============================================================================

TEST_CASE("cli: run matches in-process forward exactly, in both layouts", "[cli]") {
    for (bool batch_first : {false, true}) {
        INFO("batch_first=" << batch_first);
        TempDir dir;
        Problem p = make_problem(7, batch_first);
        write_problem(dir, p);
        std::vector<std::string> args = run_args(dir);
        if (batch_first) args.push_back("--batch-first");
        CliResult r = run_cli(dir, args);
        INFO(joined(args) << "\nstderr: " << r.err);
        REQUIRE(r.exit_code == 0);
        CHECK(r.err.empty());
        CHECK(r.out.empty());  // quiet without --verbose

        TensorMap out = hmha::safetensors::load(dir.file("out.safetensors"));
        REQUIRE(out.size() == 2);
        const std::vector<int64_t> want_out =
            batch_first ? std::vector<int64_t>{p.N, p.L, p.E} : std::vector<int64_t>{p.L, p.N, p.E};
        CHECK(out.at("attn_output").shape() == want_out);
        CHECK(out.at("attn_output_weights").shape() == std::vector<int64_t>{p.N, p.L, p.S});

        hmha::ForwardResult ref = in_process(p, batch_first, false, {});
        CHECK(same_bits(out.at("attn_output"), ref.attn_output));
        REQUIRE(ref.attn_output_weights);
        CHECK(same_bits(out.at("attn_output_weights"), *ref.attn_output_weights));
    }
}

TEST_CASE("cli: need_weights=false writes no weights, and per-head weights have a head axis", "[cli]") {
    TempDir dir;
    Problem p = make_problem(11, false);
    write_problem(dir, p);

    std::vector<std::string> args = run_args(dir);
    args.push_back("--need-weights=false");
    CliResult r = run_cli(dir, args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    TensorMap out = hmha::safetensors::load(dir.file("out.safetensors"));
    CHECK(out.size() == 1);
    CHECK(out.count("attn_output_weights") == 0);
    hmha::ForwardOptions fo;
    fo.need_weights = false;
    CHECK(same_bits(out.at("attn_output"), in_process(p, false, false, fo).attn_output));

    // --scratch reaches Options::scratch (the verbose line names the policy).
    args.insert(args.end(), {"--scratch", "per-head", "--verbose"});
    r = run_cli(dir, args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("scratch=per-head") != std::string::npos);
    out = hmha::safetensors::load(dir.file("out.safetensors"));
    CHECK(same_bits(out.at("attn_output"), in_process(p, false, false, fo, hmha::Scratch::PerHead).attn_output));

    args = run_args(dir);
    args.insert(args.end(), {"--average-attn-weights=false", "--need-weights=true"});
    r = run_cli(dir, args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    out = hmha::safetensors::load(dir.file("out.safetensors"));
    CHECK(out.at("attn_output_weights").shape() == std::vector<int64_t>{p.N, p.H, p.L, p.S});
    fo.need_weights = true;
    fo.average_attn_weights = false;
    hmha::ForwardResult ref = in_process(p, false, false, fo);
    CHECK(same_bits(out.at("attn_output_weights"), *ref.attn_output_weights));
}

TEST_CASE("cli: kdim/vdim, bias_kv, zero_attn, masks and is_causal go through unchanged", "[cli]") {
    TempDir dir;
    Problem p = make_problem(23, true, /*separate_kv=*/true);
    std::mt19937 rng(5);
    p.inputs["key_padding_mask"] = random_bools(rng, {p.N, p.S}, 0.3);
    p.inputs["attn_mask"] = random_tensor(rng, {p.N * p.H, p.L, p.S});
    write_problem(dir, p);
    // Both spellings of valued options, and explicit =true booleans.
    std::vector<std::string> args = {"run",
                                     "--weights=" + dir.file("w.safetensors"),
                                     "--inputs",
                                     dir.file("i.safetensors"),
                                     "--output=" + dir.file("out.safetensors"),
                                     "--num-heads=2",
                                     "--batch-first=true",
                                     "--add-zero-attn",
                                     "--is-causal=true",
                                     "--average-attn-weights=false",
                                     "--device",
                                     "cpu",
                                     "--scratch=per-head",
                                     "--batch-chunk=1",
                                     "--dropout=0.1"};
    CliResult r = run_cli(dir, args);
    INFO(joined(args) << "\nstderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    TensorMap out = hmha::safetensors::load(dir.file("out.safetensors"));

    hmha::ForwardOptions fo;
    fo.key_padding_mask = p.inputs.at("key_padding_mask");
    fo.attn_mask = p.inputs.at("attn_mask");
    fo.is_causal = true;
    fo.average_attn_weights = false;
    hmha::ForwardResult ref = in_process(p, true, true, fo, hmha::Scratch::PerHead, 1);
    CHECK(out.at("attn_output").shape() == std::vector<int64_t>{p.N, p.L, p.E});
    CHECK(out.at("attn_output_weights").shape() == std::vector<int64_t>{p.N, p.H, p.L, p.S + 2});
    CHECK(same_bits(out.at("attn_output"), ref.attn_output));
    CHECK(same_bits(out.at("attn_output_weights"), *ref.attn_output_weights));
}

TEST_CASE("cli: --verbose prints the shapes and the forward time", "[cli]") {
    TempDir dir;
    write_problem(dir, make_problem(3, false));
    std::vector<std::string> args = run_args(dir);
    args.push_back("--verbose");
    CliResult r = run_cli(dir, args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("attn_output (3, 2, 8)") != std::string::npos);
    CHECK(r.out.find("query (3, 2, 8)") != std::string::npos);
    CHECK(r.out.find(" ms") != std::string::npos);
}

TEST_CASE("cli: help, inspect and compare", "[cli]") {
    TempDir dir;
    for (std::vector<std::string> args : {std::vector<std::string>{"--help"},
                                          {"-h"},
                                          {"help"},
                                          {"run", "--help"},
                                          {"help", "run"},
                                          {"inspect", "--help"},
                                          {"compare", "-h"}}) {
        CliResult r = run_cli(dir, args);
        INFO(joined(args));
        CHECK(r.exit_code == 0);
        CHECK(r.out.find("usage: hmha") == 0);
        CHECK(r.err.empty());
    }
    CHECK(run_cli(dir, {"run", "--help"}).out.find("--average-attn-weights") != std::string::npos);

    const std::string a = dir.file("a.safetensors"), b = dir.file("b.safetensors");
    hmha::safetensors::save(a, {{"x", hmha::Tensor::from_floats({2, 2}, {1.0f, 2.0f, 3.0f, 4.0f})},
                                {"m", hmha::Tensor::from_bools({3}, {1, 0, 1})}});
    CliResult r = run_cli(dir, {"inspect", a});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("2 tensors") != std::string::npos);
    CHECK(r.out.find("(2, 2)") != std::string::npos);
    CHECK(r.out.find("[1, 2, 3, 4]") != std::string::npos);
    CHECK(r.out.find("[True, False, True]") != std::string::npos);

    // B is the expected side: a tensor only in A is ignored.
    hmha::safetensors::save(b, {{"x", hmha::Tensor::from_floats({2, 2}, {1.0f, 2.0f, 3.0f, 4.00001f})}});
    r = run_cli(dir, {"compare", a, b});
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("OK") != std::string::npos);
    r = run_cli(dir, {"compare", a, b, "--rtol", "0", "--atol=0"});
    CHECK(r.exit_code == 1);
    CHECK(r.out.find("FAIL") != std::string::npos);
    CHECK(r.out.find("[1, 1]") != std::string::npos);  // where the worst element is
    hmha::safetensors::save(b, {{"x", hmha::Tensor::from_floats({4}, {1.0f, 2.0f, 3.0f, 4.0f})}});
    CHECK(run_cli(dir, {"compare", a, b}).exit_code == 1);  // shape differs
    hmha::safetensors::save(b, {{"z", hmha::Tensor::from_floats({1}, {1.0f})}});
    r = run_cli(dir, {"compare", a, b});
    CHECK(r.exit_code == 1);  // missing in A
    CHECK(r.out.find("missing") != std::string::npos);
    hmha::safetensors::save(b, {{"x", hmha::Tensor::from_floats({2, 2}, {1.0f, 2.0f, 3.0f, NAN})}});
    CHECK(run_cli(dir, {"compare", a, b}).exit_code == 1);  // NaN matches only NaN
    hmha::safetensors::save(b, {{"x", hmha::Tensor::from_floats({2, 2}, {1.0f, 2.0f, INFINITY, 4.0f})}});
    r = run_cli(dir, {"compare", a, b});
    CHECK(r.exit_code == 1);  // an infinity is not within any tolerance of a finite value
    CHECK(r.out.find("worst at [1, 0]") != std::string::npos);
    CHECK(run_cli(dir, {"compare", b, b}).exit_code == 0);
}

TEST_CASE("cli: every error is one stderr line naming the argument, and writes no output", "[cli]") {
    TempDir dir;
    Problem p = make_problem(13, false);
    write_problem(dir, p);
    const std::string w = dir.file("w.safetensors"), i = dir.file("i.safetensors");
    const std::string o = dir.file("out.safetensors");

    // Input files with one thing wrong each.
    auto inputs_with = [&](const std::string &file, const std::function<void(TensorMap &)> &edit) {
        TensorMap m = p.inputs;
        edit(m);
        hmha::safetensors::save(dir.file(file), m);
        return dir.file(file);
    };
    const std::string no_query = inputs_with("no_query.safetensors", [](TensorMap &m) { m.erase("query"); });
    const std::string typo_mask = inputs_with("typo.safetensors", [&](TensorMap &m) {
        m["atn_mask"] = hmha::Tensor({p.L, p.S}, hmha::DType::Bool);
    });
    const std::string bad_query = inputs_with("bad_query.safetensors", [&](TensorMap &m) {
        m["query"] = hmha::Tensor({p.L, p.N, p.E - 1});
    });
    const std::string bad_key = inputs_with("bad_key.safetensors", [&](TensorMap &m) {
        m["key"] = hmha::Tensor({p.S, p.N + 1, p.E});
    });
    const std::string bad_mask = inputs_with("bad_mask.safetensors", [&](TensorMap &m) {
        m["attn_mask"] = hmha::Tensor({p.L + 1, p.S}, hmha::DType::Bool);
    });
    TensorMap wm = p.weights;
    wm.erase("out_proj.weight");
    hmha::safetensors::save(dir.file("w_missing.safetensors"), wm);
    write_file(dir.data() / "garbage.safetensors", "this is not a safetensors file");

    auto with = [&](std::vector<std::string> extra) {
        std::vector<std::string> args = run_args(dir);
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    };
    auto without = [&](const std::string &opt) {
        std::vector<std::string> args = run_args(dir);
        auto it = std::find(args.begin(), args.end(), opt);
        args.erase(it, it + 2);
        return args;
    };
    auto plus = [](std::vector<std::string> args, const std::vector<std::string> &extra) {
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    };
    auto replacing = [&](const std::string &opt, const std::string &value) {
        std::vector<std::string> args = run_args(dir);
        *(std::find(args.begin(), args.end(), opt) + 1) = value;
        return args;
    };

    struct Case {
        std::vector<std::string> args;
        std::string expect;  // in the stderr line
    };
    const std::vector<Case> cases = {
        {{}, "missing command"},
        {{"frobnicate"}, "frobnicate"},
        {with({"--frobnicate"}), "--frobnicate"},
        {with({"--need-weight"}), "did you mean '--need-weights'"},
        {with({"-x"}), "-x"},
        {with({"stray"}), "stray"},
        {with({"--need-weights", "false"}), "--need-weights=false"},
        {without("--weights"), "--weights"},
        {without("--inputs"), "--inputs"},
        {without("--output"), "--output"},
        {without("--num-heads"), "--num-heads"},
        {{"run", "--weights"}, "--weights"},
        {{"run", "--weights", "--inputs", i}, "--weights"},
        {with({"--num-heads", "4"}), "--num-heads"},  // given twice
        {replacing("--num-heads", "abc"), "--num-heads"},
        {replacing("--num-heads", "0"), "--num-heads"},
        {replacing("--num-heads", "-2"), "--num-heads"},
        {replacing("--num-heads", "2.5"), "--num-heads"},
        {replacing("--num-heads", "99999999999999999999"), "--num-heads"},
        {replacing("--num-heads", "3"), "--num-heads"},  // does not divide embed_dim 8
        {with({"--need-weights=maybe"}), "--need-weights"},
        {with({"--batch-first="}), "--batch-first"},
        {with({"--is-causal=1"}), "--is-causal"},
        {with({"--device", "tpu"}), "--device"},
        {with({"--scratch", "small"}), "--scratch"},
        {with({"--gpu-attention", "flash"}), "--gpu-attention"},
        {with({"--batch-chunk", "0"}), "--batch-chunk"},
        {with({"--batch-chunk=x"}), "--batch-chunk"},
        {with({"--dropout", "abc"}), "--dropout"},
        {with({"--dropout=1.5"}), "--dropout"},
        {plus(without("--output"), {"--output="}), "--output"},
        {with({"--output", dir.file("other.safetensors")}), "--output"},  // given twice
        {replacing("--weights", dir.file("missing.safetensors")), "--weights"},
        {replacing("--inputs", dir.file("missing.safetensors")), "--inputs"},
        {replacing("--weights", dir.file("garbage.safetensors")), "--weights"},
        {replacing("--inputs", dir.file("garbage.safetensors")), "--inputs"},
        {replacing("--weights", dir.file("w_missing.safetensors")), "out_proj.weight"},
        {replacing("--inputs", no_query), "query"},
        {replacing("--inputs", typo_mask), "atn_mask"},
        {replacing("--inputs", bad_query), "query"},
        {replacing("--inputs", bad_key), "key"},
        {replacing("--inputs", bad_mask), "attn_mask"},
        {replacing("--output", dir.file("no/such/dir/out.safetensors")), "--output"},
        {replacing("--output", dir.data().string()), "--output"},
        {{"inspect"}, "inspect"},
        {{"inspect", dir.file("garbage.safetensors")}, "garbage.safetensors"},
        {{"compare", w}, "compare"},
        {{"compare", w, dir.file("missing.safetensors")}, "missing.safetensors"},
        {{"compare", w, w, "--rtol", "-1"}, "--rtol"},
        {{"compare", w, w, "--atol=x"}, "--atol"},
    };
    const std::set<std::string> files_before = listing(dir.data());
    for (const Case &c : cases) {
        CliResult r = run_cli(dir, c.args);
        INFO(joined(c.args) << "\nexit " << r.exit_code << "\nstderr: " << r.err);
        CHECK_FALSE(r.signaled);
        CHECK(r.exit_code != 0);
        CHECK(r.exit_code != -1);
        CHECK(r.err.rfind("hmha: error: ", 0) == 0);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        CHECK(r.err.back() == '\n');
        CHECK(r.err.find(c.expect) != std::string::npos);
        CHECK_FALSE(fs::exists(o));
        CHECK(listing(dir.data()) == files_before);
    }
}

TEST_CASE("cli: a failing run leaves an existing output file untouched", "[cli]") {
    TempDir dir;
    Problem p = make_problem(17, false);
    // Fails inside forward, i.e. after everything was loaded and the module built.
    p.inputs["attn_mask"] = hmha::Tensor({p.L, p.S + 1});
    write_problem(dir, p);
    const std::string o = dir.file("out.safetensors");
    write_file(o, "previous contents");
    CliResult r = run_cli(dir, run_args(dir));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("attn_mask") != std::string::npos);
    CHECK(read_file(o) == "previous contents");
    CHECK(listing(dir.data()) == std::set<std::string>{"w.safetensors", "i.safetensors", "out.safetensors"});

    // A successful run replaces it.
    p.inputs.erase("attn_mask");
    write_problem(dir, p);
    r = run_cli(dir, run_args(dir));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(hmha::safetensors::load(o).count("attn_output") == 1);
}

TEST_CASE("cli: an unavailable device is a clean error", "[cli]") {
    TempDir dir;
    write_problem(dir, make_problem(19, false));
    for (const char *device : {"cuda", "opencl"}) {
        std::vector<std::string> args = run_args(dir);
        args.insert(args.end(), {"--device", device});
        CliResult r = run_cli(dir, args);
        INFO(joined(args) << "\nstderr: " << r.err);
        CHECK_FALSE(r.signaled);
        if (r.exit_code == 0) continue;  // this build and machine have the device
        CHECK(r.err.rfind("hmha: error: ", 0) == 0);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        CHECK(r.err.find(device) != std::string::npos);
        CHECK_FALSE(fs::exists(dir.file("out.safetensors")));
    }
}
