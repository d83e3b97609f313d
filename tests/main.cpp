// Catch2 main with one extra option, --hmha-device=NAME, that chooses the device
// the device-independent suites run on. When that device is not available on
// this machine, every test exits with code 4 and a line saying so, which CTest
// reports as skipped (SKIP_RETURN_CODE), never as passed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "device.h"

namespace {
hmha::Device g_device = hmha::Device::CPU;

// A one-head module on the device: throws hmha::Error if the device is absent.
void probe(hmha::Device device) {
    hmha::Options o;
    o.embed_dim = 1;
    o.num_heads = 1;
    o.device = device;
    std::map<std::string, hmha::Tensor> sd{{"in_proj_weight", hmha::Tensor({3, 1})},
                                           {"in_proj_bias", hmha::Tensor({3})},
                                           {"out_proj.weight", hmha::Tensor({1, 1})},
                                           {"out_proj.bias", hmha::Tensor({1})}};
    hmha::MultiheadAttention mha(o, sd);
}
}  // namespace

hmha::Device test_device() {
    return g_device;
}

int main(int argc, char **argv) {
    std::vector<char *> args;
    bool listing = false;
    for (int i = 0; i < argc; i++) {
        const char *prefix = "--hmha-device=";
        if (std::strncmp(argv[i], prefix, std::strlen(prefix)) == 0) {
            g_device = hmha::parse_device(argv[i] + std::strlen(prefix));
            continue;
        }
        if (std::strncmp(argv[i], "--list", 6) == 0) listing = true;
        args.push_back(argv[i]);
    }
    if (g_device != hmha::Device::CPU && !listing) {
        try {
            probe(g_device);
        } catch (const hmha::Error &e) {
            std::cout << "SKIPPED: " << e.what() << "\n";
            return 4;
        }
    }
    return Catch::Session().run((int)args.size(), args.data());
}
