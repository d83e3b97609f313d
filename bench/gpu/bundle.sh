#!/usr/bin/env bash
# Step 1 of the GPU run, here (no GPU needed): build, then gather what the GPU
# machine needs into .gpu-bundle/ (git-ignored): the test and bench binaries
# and the GPU schedule tuner (their CUDA kernels are compiled in; Halide loads
# the driver at run time) and the shared libraries they use that a bare CUDA
# image may lack.
#
#   bench/gpu/bundle.sh [BUILD_DIR=build-gpu] then, on the GPU machine:
#   bench/gpu/run.sh                          (the device tool: carry .gpu-bundle)
#
# Set HMHA_CUDA_CAPABILITY=cuda_capability_90 (say) to build for another GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build-gpu}
cd "$root"
# HMHA_GPU_TUNE: also the GPU schedule sweep (bench/gpu/CMakeLists.txt), hmha_gpu_tune,
# with the CUDA kernels scheduled by Anderson2021 at run.sh's shapes (minutes
# of autoscheduling: HMHA_GPU_AS_SHAPES= skips them).
as_shapes=${HMHA_GPU_AS_SHAPES-"4,512,512,512,8;1,2048,2048,1024,16;1,4096,4096,512,8;32,128,128,256,4"}
args="-DHMHA_GPU_TUNE=ON -DHMHA_GPU_AS_SHAPES=\"$as_shapes\" -DHMHA_GPU_AS_FAMILIES=cuda"
[ -n "${HMHA_CUDA_CAPABILITY:-}" ] && args="$args -DHMHA_CUDA_CAPABILITY=$HMHA_CUDA_CAPABILITY"
make build BUILD_DIR="$build" CMAKE_ARGS="$args"

bundle="$root/.gpu-bundle"
rm -rf "$bundle"
mkdir -p "$bundle/lib"
bins=("$build/tests/hmha_tests" "$build/bench/hmha_bench" "$build/hmha" "$build/bench/gpu/hmha_gpu_tune")
cp "${bins[@]}" "$bundle/"
# Everything outside glibc and the compiler runtime travels with the binaries.
for bin in "${bins[@]}"; do
    ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
        case "$(basename "$lib")" in
        libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libgcc_s.so* | libstdc++.so*) ;;
        *) cp -L "$lib" "$bundle/lib/" ;;
        esac
    done
done
# The device tool carries at most 64 MiB with the working tree: the binaries
# (hmha_gpu_tune alone holds over 100 kernel variants, 32 MiB) and libraries
# (OpenBLAS alone is 36 MiB) travel compressed, and run.sh unpacks them.
names=(lib)
for bin in "${bins[@]}"; do names+=("$(basename "$bin")"); done
tar -C "$bundle" -cJf "$bundle/payload.tar.xz" "${names[@]}"
(cd "$bundle" && rm -rf "${names[@]}")
git rev-parse --short HEAD > "$bundle/commit"
git diff --quiet HEAD || echo "(with uncommitted changes)" >> "$bundle/commit"
du -sh "$bundle"
echo "bundle ready: run bench/gpu/run.sh on the GPU machine with .gpu-bundle carried"
