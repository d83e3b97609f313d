// The CUDA shared-memory opt-in (runtime/src/cuda_shared_opt_in.h), with fake
// driver entry points: which launches raise a kernel's limit, what reaches the
// driver, and which symbol Halide gets for each name. Runs without a GPU; on
// one, the CUDA suites and the GPU sweep's kernels over 48 KiB run through it.
#include <map>
#include <string>
#include <vector>

#include "../runtime/src/cuda_shared_opt_in.h"
#include "catch2/catch.hpp"

namespace {

namespace opt_in = hmha::cuda_shared_opt_in;

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

int wrapper_marker = 0;

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

    CHECK(opt_in::get_symbol_with(s, wrapper, nullptr, "cuInit") == &fake_init);
    CHECK(opt_in::get_symbol_with(s, wrapper, nullptr, "cuMissing") == nullptr);
    CHECK(s.launch.load() == nullptr);
    CHECK(opt_in::get_symbol_with(s, wrapper, nullptr, "cuLaunchKernel") == wrapper);
    CHECK(s.launch.load() == &fake_launch);
    CHECK(s.set_attribute.load() == &fake_set);

    // A driver without cuFuncSetAttribute: Halide gets the driver's own launch.
    driver.erase("cuFuncSetAttribute");
    opt_in::State t;
    t.next.store(&fake_getter);
    CHECK(opt_in::get_symbol_with(t, wrapper, nullptr, "cuLaunchKernel") == reinterpret_cast<void *>(&fake_launch));
    CHECK(t.launch.load() == nullptr);
    // No library loaded yet (Halide asks the process first): nothing to wrap.
    driver.clear();
    CHECK(opt_in::get_symbol_with(t, wrapper, nullptr, "cuLaunchKernel") == nullptr);
}

#if HMHA_HAVE_CUDA
extern "C" void *halide_cuda_get_symbol(void *user_context, const char *name);  // Halide's CUDA runtime

TEST_CASE("CUDA shared-memory opt-in: Halide's CUDA runtime gets the wrapper from the driver library", "[runtime]") {
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
}

TEST_CASE("CUDA shared-memory opt-in: a CUDA build chains it onto Halide's symbol getter", "[runtime]") {
    // The runtime installs it while the process starts (runtime/src/kernels.cpp).
    halide_get_library_symbol_t current = halide_set_custom_get_library_symbol(nullptr);
    halide_set_custom_get_library_symbol(current);
    const char *env = std::getenv("HMHA_CUDA_SHARED_OPT_IN");
    if (env && std::string(env) == "0") {
        CHECK(current != &opt_in::get_symbol);
    } else {
        CHECK(current == &opt_in::get_symbol);
        CHECK(opt_in::state().next.load() != nullptr);
        CHECK(opt_in::install());  // once per process: installing again changes nothing
        CHECK(halide_set_custom_get_library_symbol(current) == current);
    }
}
#endif
