# The README's two commands: `make run` (build and demo) and `make test`
# (build and the whole suite). Both bootstrap their toolchain first.
# `make test-arm64` cross-builds for arm-64-linux and runs the CPU suite under
# qemu-aarch64 (CMakePresets.json "arm64"), with the generators of $(BUILD_DIR).
HMHA_VENV ?= $(HOME)/.cache/hmha/venv
BUILD_DIR ?= build
BUILD_TYPE ?= Release
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)
ARM64_BUILD_DIR ?= build-arm64
ARM64_CMAKE_ARGS ?=

export HMHA_VENV
CMAKE := $(HMHA_VENV)/bin/cmake
CTEST := $(HMHA_VENV)/bin/ctest
HALIDE_DIR = $(shell $(HMHA_VENV)/bin/python -c "import halide, os; print(os.path.join(halide.install_dir(), 'lib64', 'cmake', 'Halide'))")

.PHONY: all bootstrap configure build test test-arm64 test-sanitize run bench bench-report bench-report-avx2 tune clean

all: build

bootstrap:
	@scripts/bootstrap.sh

configure: bootstrap
	@$(CMAKE) -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DCMAKE_MAKE_PROGRAM=$(HMHA_VENV)/bin/ninja -DHalide_DIR=$(HALIDE_DIR) $(CMAKE_ARGS) >/dev/null

build: configure
	@$(CMAKE) --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && $(CTEST) --output-on-failure -j $(JOBS)

# The cross build imports the host build's generators, so only those are built there.
test-arm64: configure
	@$(CMAKE) --build $(BUILD_DIR) --target hmha_generators -j $(JOBS)
	@$(CMAKE) --preset arm64 -B $(ARM64_BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DCMAKE_MAKE_PROGRAM=$(HMHA_VENV)/bin/ninja -DHalide_DIR=$(HALIDE_DIR) \
	    -DHalideMHA-halide_generators_DIR=$(abspath $(BUILD_DIR))/cmake $(ARM64_CMAKE_ARGS) >/dev/null
	@$(CMAKE) --build $(ARM64_BUILD_DIR) -j $(JOBS)
	@cd $(ARM64_BUILD_DIR) && $(CTEST) --output-on-failure -j $(JOBS)

# The runtime, the CLI and the tests built with AddressSanitizer and UBSan
# (HMHA_SANITIZE; the kernels as generated, for this machine's CPU and OpenCL),
# then the CPU suite and the OpenCL suites (PoCL) under them: an invalid
# access, a leak or undefined behaviour in the runtime fails it.
SANITIZE_BUILD_DIR ?= build-sanitize
test-sanitize: bootstrap
	@$(CMAKE) -S . -B $(SANITIZE_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DCMAKE_MAKE_PROGRAM=$(HMHA_VENV)/bin/ninja -DHalide_DIR=$(HALIDE_DIR) -DHMHA_SANITIZE=address,undefined \
	    -DHMHA_TARGETS="host;host-opencl" -DHMHA_BUILD_BENCH=OFF $(CMAKE_ARGS) >/dev/null
	@$(CMAKE) --build $(SANITIZE_BUILD_DIR) --target hmha_tests hmha_cli -j $(JOBS)
	@cd $(SANITIZE_BUILD_DIR) && export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1 && \
	    ./tests/hmha_tests "~[device]" && \
	    ./tests/hmha_tests --hmha-device=opencl "[reference],[golden],[semantics],[device]"

run: build
	@scripts/demo.sh $(BUILD_DIR)

bench: build
	@$(BUILD_DIR)/bench/hmha_bench

# Retune the CPU schedules for this machine, then rebuild with the winners.
tune: build
	@$(BUILD_DIR)/bench/tune/hmha_tune --out schedules/tuned/host.json
	@$(CMAKE) --build $(BUILD_DIR) -j $(JOBS)

clean:
	rm -rf $(BUILD_DIR) $(ARM64_BUILD_DIR)

# The CPU bench report of issue 4 (bench/README.md): builds build-bench/ with
# the autoscheduled kernel variants and build-bench-untuned/ without the tuned
# params (schedules/tuned/), runs every case (about 20-25 minutes) and writes
# bench/results/<machine>-<date>.md with its charts.
bench-report: bootstrap
	@host=$$($(HMHA_VENV)/bin/python -c "import halide; print(halide.get_host_target())") && \
	    $(MAKE) --no-print-directory build BUILD_DIR=build-bench CMAKE_ARGS="$(CMAKE_ARGS) -DHMHA_BENCH_AUTOSCHEDULERS=ON -DHMHA_BENCH_HOST_TARGET=$$host"
	@$(MAKE) --no-print-directory build BUILD_DIR=build-bench-untuned CMAKE_ARGS="$(CMAKE_ARGS) -DHMHA_TUNED_FILE=/nonexistent/untuned.json"
	@py=$$(scripts/bootstrap_torch.sh) && $$py -m pip install -q --disable-pip-version-check -r bench/requirements-report.txt && \
	    $$py bench/report.py --build-dir build-bench --untuned-build-dir build-bench-untuned --torch-python $$py $(BENCH_REPORT_ARGS)

# The same report with every implementation held to AVX2 + FMA (bench/README.md):
# our kernels built for an AVX2 target with the tuned file a dispatch build's AVX2
# variant gets, the peers through their ISA switches; bench/results/<machine>-avx2-<date>.md.
AVX2_TARGET ?= x86-64-linux-avx-avx2-f16c-fma-sse41
bench-report-avx2:
	@$(MAKE) --no-print-directory build BUILD_DIR=build-bench-avx2 CMAKE_ARGS="$(CMAKE_ARGS) -DHMHA_TARGETS=$(AVX2_TARGET) -DHMHA_TUNED_FILE=$(CURDIR)/schedules/tuned/host.json"
	@py=$$(scripts/bootstrap_torch.sh) && $$py -m pip install -q --disable-pip-version-check -r bench/requirements-report.txt && \
	    $$py bench/report.py --build-dir build-bench-avx2 --isa avx2 --torch-python $$py $(BENCH_REPORT_ARGS)
