# The installed package as an app uses it (SPEC.md §5, issue 5), run by CTest:
#
#   1. cmake --install <build> --prefix <WORK_DIR>/prefix, and check the layout;
#   2. configure and build examples/ against that prefix as a separate CMake
#      project (the same cmake, generator, compiler and flags; only
#      CMAKE_PREFIX_PATH points at the package, nothing at Halide);
#   3. run examples/attention_map on demo/ and check what it prints, the PNG it
#      writes (signature and IHDR size) and, with the installed `hmha compare`,
#      its saved result against PyTorch's (demo/expected.safetensors).
#
# cmake -DHMHA_BUILD_DIR=... -DHMHA_SOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=...
#       [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] [-DBUILD_TYPE=...] [-DCXX_FLAGS=...]
#       [-DEXE_LINKER_FLAGS=...] [-DTOOLCHAIN_FILE=...] [-DEMULATOR=...] [-DSKIP_EXAMPLE=why]
#       -DLIBDIR=lib -DINCLUDEDIR=include -DBINDIR=bin -P tests/install_example.cmake
cmake_minimum_required(VERSION 3.28)

foreach (var IN ITEMS HMHA_BUILD_DIR HMHA_SOURCE_DIR WORK_DIR GENERATOR LIBDIR INCLUDEDIR BINDIR)
    if (NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "install_example.cmake: -D${var}=... is required")
    endif ()
endforeach ()

set(prefix "${WORK_DIR}/prefix")
set(example_build "${WORK_DIR}/examples-build")
set(out "${WORK_DIR}/out")
set(demo "${HMHA_SOURCE_DIR}/demo")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${out}")

# run(<what> <command...>): runs it, fails the test with its output if it fails;
# leaves stdout+stderr in RUN_OUTPUT.
function(run what)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE output
                    WORKING_DIRECTORY "${out}")
    if (NOT rc EQUAL 0)
        list(JOIN ARGN " " cmd)
        message(FATAL_ERROR "${what} failed (exit ${rc}):\n$ ${cmd}\n${output}")
    endif ()
    set(RUN_OUTPUT "${output}" PARENT_SCOPE)
endfunction()

function(expect_in haystack needle what)
    string(FIND "${haystack}" "${needle}" at)
    if (at EQUAL -1)
        message(FATAL_ERROR "${what}: expected to find '${needle}' in:\n${haystack}")
    endif ()
endfunction()

# ---- 1. install --------------------------------------------------------------
message(STATUS "1. cmake --install ${HMHA_BUILD_DIR} --prefix ${prefix}")
run("cmake --install" "${CMAKE_COMMAND}" --install "${HMHA_BUILD_DIR}" --prefix "${prefix}")

set(cmakedir "${prefix}/${LIBDIR}/cmake/HalideMHA")
foreach (f IN ITEMS "${BINDIR}/hmha" "${INCLUDEDIR}/hmha/hmha.h" "${INCLUDEDIR}/hmha/safetensors.h"
                    "${INCLUDEDIR}/HalideRuntime.h" "${INCLUDEDIR}/HalideBuffer.h"
                    "${LIBDIR}/libhmha.a" "${LIBDIR}/cmake/HalideMHA/HalideMHAConfig.cmake"
                    "${LIBDIR}/cmake/HalideMHA/HalideMHAConfigVersion.cmake")
    if (NOT EXISTS "${prefix}/${f}")
        message(FATAL_ERROR "install: ${prefix}/${f} is missing")
    endif ()
endforeach ()
# Every generated kernel: its library and its header; a CPU one of each kernel at least.
file(GLOB kernel_libs RELATIVE "${prefix}/${LIBDIR}" "${prefix}/${LIBDIR}/libhmha_*_cpu.a")
if (NOT kernel_libs)
    message(FATAL_ERROR "install: no CPU kernel libraries (libhmha_*_cpu.a) in ${prefix}/${LIBDIR}")
endif ()
file(GLOB all_libs RELATIVE "${prefix}/${LIBDIR}" "${prefix}/${LIBDIR}/libhmha_*.a")
foreach (lib IN LISTS all_libs)
    string(REGEX REPLACE "^lib(.*)\\.a$" "\\1" name "${lib}")
    if (NOT name MATCHES "runtime" AND NOT EXISTS "${prefix}/${INCLUDEDIR}/${name}.h")
        message(FATAL_ERROR "install: ${lib} is installed without its header ${INCLUDEDIR}/${name}.h")
    endif ()
endforeach ()
# The package must stand alone: nothing in it may point back at the build tree.
file(READ "${cmakedir}/HalideMHAConfig.cmake" config)
foreach (forbidden IN ITEMS "${HMHA_BUILD_DIR}" "${HMHA_SOURCE_DIR}" "Halide::" "find_dependency(Halide" "nlohmann")
    string(FIND "${config}" "${forbidden}" at)
    if (NOT at EQUAL -1)
        message(FATAL_ERROR "install: HalideMHAConfig.cmake mentions '${forbidden}'; the package must stand alone")
    endif ()
endforeach ()

# A build that cannot build examples/ (a cross build without the target's
# libpng) stops here, and CTest reports the test skipped (SKIP_REGULAR_EXPRESSION).
if (DEFINED SKIP_EXAMPLE AND NOT SKIP_EXAMPLE STREQUAL "")
    message(STATUS "package test: SKIPPED steps 2-3 (installed package checked): ${SKIP_EXAMPLE}")
    return()
endif ()

# ---- 2. examples/ as its own project, against the prefix only -----------------
message(STATUS "2. configure and build examples/ with CMAKE_PREFIX_PATH=${prefix}")
set(configure_args -S "${HMHA_SOURCE_DIR}/examples" -B "${example_build}" -G "${GENERATOR}"
    "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
foreach (pair IN ITEMS "MAKE_PROGRAM;CMAKE_MAKE_PROGRAM" "CXX_COMPILER;CMAKE_CXX_COMPILER"
                       "BUILD_TYPE;CMAKE_BUILD_TYPE" "CXX_FLAGS;CMAKE_CXX_FLAGS"
                       "EXE_LINKER_FLAGS;CMAKE_EXE_LINKER_FLAGS" "TOOLCHAIN_FILE;CMAKE_TOOLCHAIN_FILE")
    list(GET pair 0 ours)
    list(GET pair 1 theirs)
    if (DEFINED ${ours} AND NOT "${${ours}}" STREQUAL "")
        list(APPEND configure_args "-D${theirs}=${${ours}}")
    endif ()
endforeach ()
run("configuring examples/" "${CMAKE_COMMAND}" ${configure_args})
# find_package must have found this prefix, not another installed HalideMHA.
file(STRINGS "${example_build}/CMakeCache.txt" found_dir REGEX "^HalideMHA_DIR:")
string(REGEX REPLACE "^[^=]*=" "" found_dir "${found_dir}")
file(REAL_PATH "${found_dir}" found_dir)
file(REAL_PATH "${cmakedir}" want_dir)
if (NOT found_dir STREQUAL want_dir)
    message(FATAL_ERROR "examples/: find_package(HalideMHA) found '${found_dir}', expected '${want_dir}'")
endif ()
run("building examples/" "${CMAKE_COMMAND}" --build "${example_build}")

# ---- 3. run the app on demo/ and check its output ------------------------------
# The demo's own flags (demo/args.txt: --num-heads 4 --batch-first); batch 1 is
# the sequence whose last two keys are padding.
file(READ "${demo}/args.txt" demo_flags)
separate_arguments(demo_flags UNIX_COMMAND "${demo_flags}")
set(app "${example_build}/attention_map")
message(STATUS "3. attention_map on demo/, batch 1, head 2")
run("attention_map" ${EMULATOR} "${app}" "${demo}/weights.safetensors" "${demo}/inputs.safetensors"
    ${demo_flags} --batch 1 --head 2 --png "${out}/map.png" --save "${out}/result.safetensors")
set(printed "${RUN_OUTPUT}")
message(STATUS "attention_map printed:\n${printed}")
expect_in("${printed}" "attn_output (2, 8, 16)" "attention_map output")
expect_in("${printed}" "attn_output_weights (2, 4, 8, 8) (per head)" "attention_map output")
expect_in("${printed}" "hidden by key_padding_mask: 6 7\n" "attention_map output")
expect_in("${printed}" "row sums: min 1.000000 max 1.000000" "attention_map output")
expect_in("${printed}" "largest weight on a hidden key: 0.000000" "attention_map output")

# The PNG: signature, then the IHDR chunk with big-endian width and height.
# 8 x 8 cells of 32 px with an 8 px margin: 272 high; the colour bar and its
# labels add 12 + 20 + 6 + 32 px to the right: 342 wide.
set(want_w 342)
set(want_h 272)
if (NOT EXISTS "${out}/map.png")
    message(FATAL_ERROR "attention_map: ${out}/map.png was not written")
endif ()
file(READ "${out}/map.png" head LIMIT 24 HEX)
string(SUBSTRING "${head}" 0 16 signature)
string(SUBSTRING "${head}" 24 8 chunk)
string(SUBSTRING "${head}" 32 8 w_hex)
string(SUBSTRING "${head}" 40 8 h_hex)
if (NOT signature STREQUAL "89504e470d0a1a0a" OR NOT chunk STREQUAL "49484452")
    message(FATAL_ERROR "attention_map: ${out}/map.png is not a PNG (first bytes ${head})")
endif ()
math(EXPR png_w "0x${w_hex}")
math(EXPR png_h "0x${h_hex}")
if (NOT png_w EQUAL want_w OR NOT png_h EQUAL want_h)
    message(FATAL_ERROR "attention_map: map.png is ${png_w} x ${png_h}, expected ${want_w} x ${want_h}")
endif ()
expect_in("${printed}" "map.png: ${want_w} x ${want_h} pixels" "attention_map output")

# The saved result against PyTorch's, with the installed command line.
run("hmha compare (installed bin/hmha)" ${EMULATOR} "${prefix}/${BINDIR}/hmha" compare
    "${out}/result.safetensors" "${demo}/expected.safetensors")
message(STATUS "${RUN_OUTPUT}")

# No arguments at all: the demo checkpoint, batch 0, head 0, ./attention_map.png.
run("attention_map (defaults)" ${EMULATOR} "${app}")
expect_in("${RUN_OUTPUT}" "batch 0, head 0: 8 queries x 8 keys; hidden by key_padding_mask: none" "attention_map defaults")
if (NOT EXISTS "${out}/attention_map.png")
    message(FATAL_ERROR "attention_map (defaults): ${out}/attention_map.png was not written")
endif ()
message(STATUS "package test: OK")
