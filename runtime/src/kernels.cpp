#include "kernels.h"

#include <string>

#include "HalideRuntime.h"

namespace {
// Halide reports errors through halide_error; keep the text for the exception
// instead of letting it go to stderr.
thread_local std::string last_halide_error;
}  // namespace

extern "C" void halide_error(void *, const char *msg) {
    last_halide_error = msg ? msg : "";
    while (!last_halide_error.empty() && last_halide_error.back() == '\n') last_halide_error.pop_back();
}

namespace hmha {

const KernelSet &kernels_for(Device device) {
    static const KernelSet cpu{hmha_linear_cpu, hmha_sdpa_cpu, hmha_masked_softmax_cpu, hmha_attend_cpu,
                               hmha_head_mean_cpu};
    if (device == Device::CPU) return cpu;
    throw Error(std::string("device: '") + to_string(device) +
                "' is not available: this build has kernels for cpu only (expected device=cpu)");
}

void check_status(const char *kernel, int status) {
    if (status != 0) {
        std::string msg = "internal error: kernel " + std::string(kernel) + " failed (Halide status " +
                          std::to_string(status) + ")";
        if (!last_halide_error.empty()) msg += ": " + last_halide_error;
        last_halide_error.clear();
        throw Error(msg);
    }
}

}  // namespace hmha
