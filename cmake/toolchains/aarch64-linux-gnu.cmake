# Cross-compiling for 64-bit ARM Linux with Debian's cross toolchain, running
# the tests under qemu-user (issue 5):
#
#   apt-get install g++-aarch64-linux-gnu qemu-user        (scripts/bootstrap.sh)
#   make test-arm64                                        (or: cmake --preset arm64)
#
# The Halide generators run on the build machine: the cross build imports them
# from a host build (-DHalideMHA-halide_generators_DIR=<host build>/cmake) and
# uses the host's Halide (-DHalide_DIR) to generate kernels and the Halide
# runtime for arm-64-linux (HMHA_TARGETS, set by the preset).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(HMHA_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${HMHA_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${HMHA_CROSS_TRIPLE}-g++)

# Libraries and headers of the target only; programs of the host.
set(CMAKE_FIND_ROOT_PATH /usr/${HMHA_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# Packages from both: the host's Halide (its generator tools and headers) and
# header-only packages installed for the host (Catch2, nlohmann_json).
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# Those header-only packages name /usr/include as their include directory. For
# the cross compiler it comes last (-idirafter), after the target's own headers,
# so only what the target lacks (catch2/, nlohmann/) is taken from it; being a
# compiler search directory, CMake then leaves it off the command line.
set(CMAKE_C_FLAGS_INIT "-idirafter /usr/include")
set(CMAKE_CXX_FLAGS_INIT "-idirafter /usr/include")

# Tests (ctest, catch_discover_tests) run under qemu-user with the target's
# libraries.
find_program(HMHA_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if (HMHA_QEMU_AARCH64)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${HMHA_QEMU_AARCH64};-L;/usr/${HMHA_CROSS_TRIPLE}")
endif ()
