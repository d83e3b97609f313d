# The README's two commands: `make run` (build and demo) and `make test`
# (build and the whole suite). Both bootstrap their toolchain first.
HMHA_VENV ?= $(HOME)/.cache/hmha/venv
BUILD_DIR ?= build
BUILD_TYPE ?= Release
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)

export HMHA_VENV
CMAKE := $(HMHA_VENV)/bin/cmake
CTEST := $(HMHA_VENV)/bin/ctest
HALIDE_DIR = $(shell $(HMHA_VENV)/bin/python -c "import halide, os; print(os.path.join(halide.install_dir(), 'lib64', 'cmake', 'Halide'))")

.PHONY: all bootstrap configure build test run bench tune clean

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

run: build
	@scripts/demo.sh $(BUILD_DIR)

bench: build
	@$(BUILD_DIR)/bench/hmha_bench

# Retune the CPU schedules for this machine, then rebuild with the winners.
tune: build
	@$(BUILD_DIR)/bench/tune/hmha_tune --out schedules/tuned/host.json
	@$(CMAKE) --build $(BUILD_DIR) -j $(JOBS)

clean:
	rm -rf $(BUILD_DIR)
