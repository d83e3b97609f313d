// The device a test run targets: cpu by default, or the one named by
// `--hmha-device=opencl|cuda` on the test binary's command line (tests/main.cpp).
// The device-independent suites ([reference], [golden], [semantics]) build
// their modules on it, so CTest runs them once per device family.
#pragma once

#include "hmha/hmha.h"

hmha::Device test_device();
