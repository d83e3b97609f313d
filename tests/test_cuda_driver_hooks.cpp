// The CUDA driver hooks (runtime/src/cuda_driver_hooks.h), with fake driver
// entry points: which launches raise a kernel's shared-memory limit, which JIT
// options a module load passes for each register cap, what reaches the
// driver, and which symbol Halide gets for each name. Runs without a GPU; on
// one, the CUDA suites and the GPU sweep's kernels run through them.
#include <cstdlib>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../runtime/src/cuda_driver_hooks.h"
#include "catch2/catch.hpp"
#include "device.h"
#include "hmha/hmha.h"
#include "reference.h"

namespace {

namespace opt_in = hmha::cuda_hooks;

struct Calls {
    std::vector<std::pair<int, int>> attributes;  // (attribute, value) per cuFuncSetAttribute
    std::vector<unsigned> launches;               // shared bytes per cuLaunchKernel
    opt_in::CUfunction last_f = nullptr;
    unsigned last_grid_x = 0, last_block_z = 0;
    opt_in::CUstream last_stream = nullptr;
    void **last_params = nullptr;
    int set_result = 0;
};
Calls calls;

opt_in::CUresult fake_set(opt_in::CUfunction, int attribute, int value) {
    calls.attributes.push_back({attribute, value});
    return calls.set_result;
}

opt_in::CUresult fake_launch(opt_in::CUfunction f, unsigned gx, unsigned, unsigned, unsigned, unsigned, unsigned bz,
                             unsigned shared, opt_in::CUstream stream, void **params, void **) {
    calls.launches.push_back(shared);
    calls.last_f = f;
    calls.last_grid_x = gx;
    calls.last_block_z = bz;
    calls.last_stream = stream;
    calls.last_params = params;
    return 0;
}

int fake_init = 0;
std::map<std::string, void *> driver;  // what the fake "libcuda" exports
void *fake_getter(void *, const char *name) {
    auto it = driver.find(name);
    return it == driver.end() ? nullptr : it->second;
}

int wrapper_marker = 0, load_wrapper_marker = 0;
opt_in::Wrappers wrappers() {
    return {&wrapper_marker, &load_wrapper_marker};
}

struct Load {
    opt_in::CUmodule *module = nullptr;
    const void *image = nullptr;
    std::vector<std::pair<int, uintptr_t>> options;  // (option, value) as the driver got them
    bool null_arrays = false;                        // no options: both arrays null
};
std::vector<Load> loads;
opt_in::CUresult fake_load(opt_in::CUmodule *module, const void *image, unsigned n, int *options, void **values) {
    Load l{module, image, {}, n == 0 && options == nullptr && values == nullptr};
    for (unsigned i = 0; i < n; i++) l.options.push_back({options[i], reinterpret_cast<uintptr_t>(values[i])});
    loads.push_back(l);
    return 200;  // CUDA_ERROR_INVALID_IMAGE: the caller sees the driver's result
}

// A fake driver's kernels: their registers and local bytes by function.
std::map<opt_in::CUfunction, std::pair<int, int>> kernel_attributes;
int lookups = 0, attribute_queries = 0;
opt_in::CUresult fake_get_function(opt_in::CUfunction *f, opt_in::CUmodule module, const char *name) {
    lookups++;
    if (std::string(name) == "missing") return 500;  // CUDA_ERROR_NOT_FOUND
    *f = static_cast<opt_in::CUfunction>(module);    // the fake's kernel: the module itself
    return 0;
}
opt_in::CUresult fake_get_attribute(int *value, int attribute, opt_in::CUfunction f) {
    attribute_queries++;
    auto it = kernel_attributes.find(f);
    if (it == kernel_attributes.end()) return 1;
    if (attribute == opt_in::kAttrNumRegs)
        *value = it->second.first;
    else if (attribute == opt_in::kAttrLocalSizeBytes)
        *value = it->second.second;
    else
        return 1;
    return 0;
}
int get_function_marker = 0;

}  // namespace

TEST_CASE("CUDA shared-memory opt-in: launches over 48 KiB raise the kernel's limit first", "[runtime]") {
    calls = Calls{};
    opt_in::State s;
    s.launch.store(&fake_launch);
    s.set_attribute.store(&fake_set);
    int kernel = 0, stream = 0;
    void *params[1] = {nullptr};
    auto *f = static_cast<opt_in::CUfunction>(&kernel);
    auto *st = static_cast<opt_in::CUstream>(&stream);

    // At and below CUDA's default 48 KiB: straight to the driver, no attribute.
    REQUIRE(opt_in::launch_with(s, f, 7, 1, 1, 32, 8, 2, 0, st, params, nullptr) == 0);
    REQUIRE(opt_in::launch_with(s, f, 7, 1, 1, 32, 8, 2, 48 * 1024, st, params, nullptr) == 0);
    CHECK(calls.attributes.empty());
    // Above: CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (8) = the launch's bytes, then the launch.
    REQUIRE(opt_in::launch_with(s, f, 7, 1, 1, 32, 8, 2, 66 * 1024, st, params, nullptr) == 0);
    REQUIRE(calls.attributes.size() == 1);
    CHECK(calls.attributes[0] == std::pair<int, int>{8, 66 * 1024});
    CHECK(calls.launches == std::vector<unsigned>{0, 48 * 1024, 66 * 1024});
    CHECK(calls.last_f == f);
    CHECK(calls.last_grid_x == 7);
    CHECK(calls.last_block_z == 2);
    CHECK(calls.last_stream == st);
    CHECK(calls.last_params == params);

    // The driver refuses (over the device's opt-in limit): its error, no launch.
    calls.set_result = 1;  // CUDA_ERROR_INVALID_VALUE
    CHECK(opt_in::launch_with(s, f, 7, 1, 1, 32, 8, 2, 300 * 1024, st, params, nullptr) == 1);
    CHECK(calls.launches.size() == 3);
}

TEST_CASE("CUDA shared-memory opt-in: Halide gets the wrapper for cuLaunchKernel only", "[runtime]") {
    driver = {{"cuInit", &fake_init},
              {"cuLaunchKernel", reinterpret_cast<void *>(&fake_launch)},
              {"cuFuncSetAttribute", reinterpret_cast<void *>(&fake_set)}};
    opt_in::State s;
    s.next.store(&fake_getter);
    void *wrapper = &wrapper_marker;

    CHECK(opt_in::get_symbol_with(s, wrappers(), nullptr, "cuInit") == &fake_init);
    CHECK(opt_in::get_symbol_with(s, wrappers(), nullptr, "cuMissing") == nullptr);
    CHECK(s.launch.load() == nullptr);
    CHECK(opt_in::get_symbol_with(s, wrappers(), nullptr, "cuLaunchKernel") == wrapper);
    CHECK(s.launch.load() == &fake_launch);
    CHECK(s.set_attribute.load() == &fake_set);

    // A driver without cuFuncSetAttribute: Halide gets the driver's own launch.
    driver.erase("cuFuncSetAttribute");
    opt_in::State t;
    t.next.store(&fake_getter);
    CHECK(opt_in::get_symbol_with(t, wrappers(), nullptr, "cuLaunchKernel") == reinterpret_cast<void *>(&fake_launch));
    CHECK(t.launch.load() == nullptr);
    // No library loaded yet (Halide asks the process first): nothing to wrap.
    driver.clear();
    CHECK(opt_in::get_symbol_with(t, wrappers(), nullptr, "cuLaunchKernel") == nullptr);
}

TEST_CASE("CUDA driver hooks: each hook wraps its entry point only when it has something to do", "[runtime]") {
    driver = {{"cuLaunchKernel", reinterpret_cast<void *>(&fake_launch)},
              {"cuFuncSetAttribute", reinterpret_cast<void *>(&fake_set)},
              {"cuModuleLoadDataEx", reinterpret_cast<void *>(&fake_load)}};
    auto load = reinterpret_cast<void *>(&fake_load);
    {
        // No register cap configured: Halide's module loads go to the driver as they are.
        opt_in::State s;
        s.next.store(&fake_getter);
        CHECK(opt_in::get_symbol_with(s, wrappers(), nullptr, "cuModuleLoadDataEx") == load);
        CHECK(s.load_module.load() == nullptr);
    }
    for (int cap : {0, 96}) {
        // A cap (0: none): the wrapper, with the driver's entry point behind it;
        // the shared-memory opt-in off: the driver's launch.
        opt_in::State s;
        s.next.store(&fake_getter);
        s.max_registers.store(cap);
        s.shared_opt_in.store(false);
        CHECK(opt_in::get_symbol_with(s, wrappers(), nullptr, "cuModuleLoadDataEx") == &load_wrapper_marker);
        CHECK(s.load_module.load() == &fake_load);
        CHECK(opt_in::get_symbol_with(s, wrappers(), nullptr, "cuLaunchKernel") ==
              reinterpret_cast<void *>(&fake_launch));
        CHECK(s.launch.load() == nullptr);
    }
    driver.clear();
}

TEST_CASE("CUDA driver hooks: each kernel entry's registers and local memory recorded once, as the driver says",
          "[runtime]") {
    opt_in::State s;
    s.get_function.store(&fake_get_function);
    s.get_attribute.store(&fake_get_attribute);
    int mod_a = 0, mod_b = 0, mod_c = 0;
    auto *a = static_cast<opt_in::CUmodule>(&mod_a), *b = static_cast<opt_in::CUmodule>(&mod_b),
         *c = static_cast<opt_in::CUmodule>(&mod_c);
    kernel_attributes = {{a, {64, 336}}, {b, {48, 0}}};  // c: the driver answers nothing
    lookups = attribute_queries = 0;
    opt_in::CUfunction f = nullptr;
    // Halide looks a kernel up before every launch: recorded the first time only.
    for (int launch = 0; launch < 3; launch++) {
        REQUIRE(opt_in::get_function_with(s, &f, a, "_kernel_y") == 0);
        CHECK(f == a);
    }
    REQUIRE(opt_in::get_function_with(s, &f, b, "_kernel_out") == 0);
    REQUIRE(opt_in::get_function_with(s, &f, c, "_kernel_mean") == 0);
    CHECK(opt_in::get_function_with(s, &f, a, "missing") == 500);  // the driver's error, nothing recorded
    CHECK(lookups == 6);
    CHECK(attribute_queries == 6);  // two a kernel, three kernels
    REQUIRE(s.compiled.size() == 3);
    CHECK(s.compiled[0].entry == "_kernel_y");
    CHECK(s.compiled[0].registers == 64);
    CHECK(s.compiled[0].local_bytes == 336);
    CHECK(s.compiled[1].entry == "_kernel_out");
    CHECK(s.compiled[1].registers == 48);
    CHECK(s.compiled[1].local_bytes == 0);
    CHECK(s.compiled[2].registers == -1);
    CHECK(s.compiled[2].local_bytes == -1);

    // Past kMaxRecordedKernels entries, lookups still work and record nothing more.
    std::vector<int> many(opt_in::kMaxRecordedKernels);
    for (int &m : many) REQUIRE(opt_in::get_function_with(s, &f, static_cast<opt_in::CUmodule>(&m), "k") == 0);
    CHECK(s.compiled.size() == (size_t)opt_in::kMaxRecordedKernels);
    CHECK(f == &many.back());

    // The getter hands Halide the wrapper where the driver can say (cuFuncGetAttribute).
    driver = {{"cuModuleGetFunction", reinterpret_cast<void *>(&fake_get_function)},
              {"cuFuncGetAttribute", reinterpret_cast<void *>(&fake_get_attribute)}};
    opt_in::State t;
    t.next.store(&fake_getter);
    opt_in::Wrappers w{&wrapper_marker, &load_wrapper_marker, &get_function_marker};
    CHECK(opt_in::get_symbol_with(t, w, nullptr, "cuModuleGetFunction") == &get_function_marker);
    CHECK(t.get_function.load() == &fake_get_function);
    CHECK(t.get_attribute.load() == &fake_get_attribute);
    driver.erase("cuFuncGetAttribute");
    opt_in::State u;
    u.next.store(&fake_getter);
    CHECK(opt_in::get_symbol_with(u, w, nullptr, "cuModuleGetFunction") ==
          reinterpret_cast<void *>(&fake_get_function));
    driver.clear();
}

TEST_CASE("CUDA register cap: module loads get the configured cap in place of Halide's", "[runtime]") {
    // Halide 21 loads every module with {CU_JIT_MAX_REGISTERS: 64} (or
    // $HL_CUDA_JIT_MAX_REGISTERS); 7 is CU_JIT_OPTIMIZATION_LEVEL, standing for
    // any other option, which must pass unchanged.
    const int max_regs = opt_in::kJitMaxRegisters, opt_level = 7;
    int halide_options[2] = {max_regs, opt_level};
    void *halide_values[2] = {reinterpret_cast<void *>(uintptr_t{64}), reinterpret_cast<void *>(uintptr_t{4})};
    opt_in::CUmodule module = nullptr;
    const char image[] = "// PTX";
    using Options = std::vector<std::pair<int, uintptr_t>>;
    auto load_with = [&](int cap, unsigned n) {
        loads.clear();
        opt_in::State s;
        s.load_module.store(&fake_load);
        s.max_registers.store(cap);
        CHECK(opt_in::load_module_with(s, &module, image, n, halide_options, halide_values) == 200);
        REQUIRE(loads.size() == 1);
        CHECK(loads[0].module == &module);
        CHECK(loads[0].image == image);
        return loads[0];
    };
    SECTION("no cap configured: Halide's options") {
        CHECK(load_with(opt_in::kKeepHalideCap, 1).options == Options{{max_regs, 64}});
        CHECK(load_with(opt_in::kKeepHalideCap, 2).options == Options{{max_regs, 64}, {opt_level, 4}});
    }
    SECTION("0: no cap at all, the driver chooses") {
        Load l = load_with(0, 1);
        CHECK(l.options.empty());
        CHECK(l.null_arrays);
        CHECK(load_with(0, 2).options == Options{{opt_level, 4}});
    }
    SECTION("1-255: that cap") {
        CHECK(load_with(128, 1).options == Options{{max_regs, 128}});
        CHECK(load_with(255, 2).options == Options{{opt_level, 4}, {max_regs, 255}});
        CHECK(load_with(32, 0).options == Options{{max_regs, 32}});  // a load without options gets one
    }
    // Halide's arrays are never written.
    CHECK(halide_options[0] == max_regs);
    CHECK(halide_values[0] == reinterpret_cast<void *>(uintptr_t{64}));
}

TEST_CASE("CUDA register cap: HMHA_CUDA_MAX_REGISTERS accepts 0-255 and names what it got otherwise", "[runtime]") {
    std::string error;
    CHECK(opt_in::parse_max_registers(nullptr, &error) == opt_in::kKeepHalideCap);
    CHECK(opt_in::parse_max_registers("", &error) == opt_in::kKeepHalideCap);
    CHECK(error.empty());
    CHECK(opt_in::parse_max_registers("0", &error) == 0);
    CHECK(opt_in::parse_max_registers("1", &error) == 1);
    CHECK(opt_in::parse_max_registers("255", &error) == 255);
    CHECK(error.empty());
    for (const char *bad : {"256", "-1", "64k", "many", "99999999999999999999"}) {
        error.clear();
        CHECK(opt_in::parse_max_registers(bad, &error) == opt_in::kKeepHalideCap);
        CHECK(error.find("HMHA_CUDA_MAX_REGISTERS") != std::string::npos);
        CHECK(error.find("0 (no cap") != std::string::npos);
        CHECK(error.find(std::string("got '") + bad + "'") != std::string::npos);
    }
}

#if HMHA_HAVE_CUDA
extern "C" void *halide_cuda_get_symbol(void *user_context, const char *name);  // Halide's CUDA runtime

TEST_CASE("CUDA driver hooks: Halide's CUDA runtime gets the wrappers from the driver library", "[runtime]") {
    // Halide's own lookup, as its CUDA runtime makes it when it loads the
    // driver (libcuda.so: a GPU machine's, or the toolkit's stub library on
    // LD_LIBRARY_PATH, which has every entry point and runs none).
    if (halide_cuda_get_symbol(nullptr, "cuInit") == nullptr) {
        // tests/CMakeLists.txt runs this case again with the stub on the path.
        REQUIRE(std::getenv("HMHA_EXPECT_CUDA_DRIVER") == nullptr);
        WARN("skipped: no CUDA driver library (libcuda.so) to look symbols up in");
        return;
    }
    const char *env = std::getenv("HMHA_CUDA_SHARED_OPT_IN");
    void *launch = halide_cuda_get_symbol(nullptr, "cuLaunchKernel");
    REQUIRE(launch != nullptr);
    if (env && std::string(env) == "0") {
        CHECK(launch != reinterpret_cast<void *>(&opt_in::launch));
    } else {
        CHECK(launch == reinterpret_cast<void *>(&opt_in::launch));
        CHECK(opt_in::state().launch.load() != nullptr);
        CHECK(opt_in::state().set_attribute.load() != nullptr);
    }
    // The module load: wrapped where a register cap is configured
    // (tests/CMakeLists.txt runs this case again with HMHA_CUDA_MAX_REGISTERS=0).
    void *load = halide_cuda_get_symbol(nullptr, "cuModuleLoadDataEx");
    REQUIRE(load != nullptr);
    const int cap = opt_in::configured_max_registers();
    CHECK(opt_in::state().max_registers.load() == cap);
    if (cap == opt_in::kKeepHalideCap) {
        CHECK(load != reinterpret_cast<void *>(&opt_in::load_module));
    } else {
        CHECK(load == reinterpret_cast<void *>(&opt_in::load_module));
        CHECK(opt_in::state().load_module.load() != nullptr);
    }
    if (const char *expected = std::getenv("HMHA_EXPECT_MAX_REGISTERS")) CHECK(cap == std::atoi(expected));
    // Kernel lookups: wrapped wherever the hooks are installed (the driver has cuFuncGetAttribute).
    void *get_function = halide_cuda_get_symbol(nullptr, "cuModuleGetFunction");
    REQUIRE(get_function != nullptr);
    CHECK((get_function == reinterpret_cast<void *>(&opt_in::get_function)) == opt_in::install());
    if (opt_in::install()) CHECK(opt_in::state().get_attribute.load() != nullptr);
}

TEST_CASE("CUDA driver hooks: a CUDA build chains them onto Halide's symbol getter", "[runtime]") {
    // The runtime installs it while the process starts (runtime/src/kernels.cpp).
    halide_get_library_symbol_t current = halide_set_custom_get_library_symbol(nullptr);
    halide_set_custom_get_library_symbol(current);
    const char *env = std::getenv("HMHA_CUDA_SHARED_OPT_IN");
    if (env && std::string(env) == "0" && opt_in::configured_max_registers() == opt_in::kKeepHalideCap) {
        CHECK(current != &opt_in::get_symbol);
    } else {
        CHECK(current == &opt_in::get_symbol);
        CHECK(opt_in::state().next.load() != nullptr);
        CHECK(opt_in::install());  // once per process: installing again changes nothing
        CHECK(halide_set_custom_get_library_symbol(current) == current);
    }
}

TEST_CASE("CUDA driver hooks: a forward's kernels, as the driver compiled them, keep to the register cap", "[device]") {
    REQUIRE(test_device() != hmha::Device::CPU);
    if (test_device() != hmha::Device::CUDA) {
        WARN("skipped on " << hmha::to_string(test_device()) << ": CUDA's JIT only");
        return;
    }
    if (!opt_in::install()) {
        WARN(
            "skipped: the driver hooks are not installed (HMHA_CUDA_SHARED_OPT_IN=0 and no register cap), "
            "so no kernel is recorded");
        return;
    }
    // Every CUDA kernel class the runtime has: projections of few rows (10 x
    // 128 outputs) and of many (4096 x 128 = 2^19: the tuned tile, x as
    // float4), sdpa's general kernel (5 queries) and its head_dim-64 one
    // (2048), and the need_weights kernels.
    std::mt19937 rng(11);
    for (int64_t L : {5, 2048}) {
        hmha::Options o;
        o.device = hmha::Device::CUDA;
        o.embed_dim = 128;
        o.num_heads = 2;
        hmha::MultiheadAttention mha(o, random_state_dict(o, rng));
        const hmha::Tensor q = random_tensor({L, 2, 128}, rng);
        for (bool need_weights : {false, true}) {
            hmha::ForwardOptions f;
            f.need_weights = need_weights;
            mha.forward(q, q, q, f);
        }
    }
    const std::vector<opt_in::CompiledKernel> compiled = opt_in::compiled_kernels();
    const int cap = opt_in::state().max_registers.load();
    const int jit_cap = opt_in::jit_max_registers();
    const int limit = jit_cap == 0 ? opt_in::kMaxRegisters : jit_cap;
    std::ostringstream listing;
    for (const opt_in::CompiledKernel &k : compiled) {
        listing << k.entry << ": " << k.registers << " registers, " << k.local_bytes << " bytes local\n";
    }
    INFO("register cap " << cap << " (limit " << limit << "); kernels:\n" << listing.str());
    REQUIRE(compiled.size() >= 6);
    for (const opt_in::CompiledKernel &k : compiled) {
        CHECK(k.registers > 0);
        CHECK(k.registers <= limit);
        CHECK(k.local_bytes >= 0);
    }
    if (const char *expected = std::getenv("HMHA_EXPECT_MAX_REGISTERS")) CHECK(cap == std::atoi(expected));
}
#endif
