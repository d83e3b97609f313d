# Which kernel libraries are generated, from one option (issue 5):
#
#   -DHMHA_TARGETS="x86-64-linux-avx2-fma;host-cuda"
#
# HMHA_TARGETS is a list of Halide target strings, one per device family. The
# family follows from the target's features: `cuda` -> cuda, `opencl` ->
# opencl, neither -> cpu (the default device; every build has one). An entry
# may name several targets separated by commas, Halide's multi-target syntax:
# the library then holds one variant per target and its first call picks the
# first variant whose features the running CPU has (the Halide runtime's
# halide_can_use_target_features); the last is the baseline, used without a
# check. So list the most specific first.
#
# Left empty (the default), it is derived from the older per-family options:
#
#   cpu     HMHA_CPU_TARGET: `host` natively, or the cross target (arm-64-linux
#           with cmake/toolchains/aarch64-linux-gnu.cmake). On x86-64, `host`
#           becomes HMHA_X86_64_DISPATCH_TARGETS (AVX-512 for Zen 4 and for
#           Skylake-SP and later, AVX2, SSE4.1), so one binary runs on any
#           x86-64 and uses AVX-512 where the CPU has it; -DHMHA_X86_64_DISPATCH=OFF
#           builds for exactly this machine instead.
#   opencl  HMHA_OPENCL_TARGET if set, else <cpu baseline>-opencl   (native builds)
#   cuda    HMHA_CUDA_TARGET if set, else <cpu baseline>-cuda-<HMHA_CUDA_CAPABILITY>
#
# Entries for this build's platform (Halide_CMAKE_TARGET) are what the runtime
# links and the tests run. An entry for another platform (arm-64-linux in an
# x86-64 build) only has its libraries generated, hmha_<kernel>_<family>_<platform>
# with the Halide runtime hmha_halide_runtime_<platform>, for an app of that
# platform; building and testing the runtime there is a build of its own with a
# toolchain (cmake/toolchains/, CMakePresets.json "arm64").
#
# Sets, for the including CMakeLists:
#   HMHA_FAMILIES              the families built, cpu first (cpu;opencl;cuda at most)
#   HMHA_<FAMILY>_TARGETS      each family's Halide targets, a CMake list (several: dispatch)
#   HMHA_RUNTIME_TARGET        the target the shared Halide runtime is generated for
#   HMHA_FAMILY_DEFINITIONS    HMHA_HAVE_OPENCL=0|1;HMHA_HAVE_CUDA=0|1, for code that
#                              names a GPU family's symbols
#   HMHA_OTHER_PLATFORMS       other platforms' ids (arm_64_linux), each with
#                              HMHA_<id>_FAMILIES and HMHA_<id>_<FAMILY>_TARGETS
include_guard(GLOBAL)

if (CMAKE_CROSSCOMPILING)
    set(_hmha_cpu_default "${Halide_CMAKE_TARGET}")
else ()
    set(_hmha_cpu_default "host")
endif ()
set(HMHA_CPU_TARGET "${_hmha_cpu_default}" CACHE STRING
    "Halide target of the CPU kernels when HMHA_TARGETS is empty; also names the tuned params, schedules/tuned/<it>.json")
set(HMHA_CUDA_CAPABILITY "cuda_capability_80" CACHE STRING
    "Halide CUDA capability feature of the CUDA kernels when HMHA_TARGETS is empty")
set(HMHA_TARGETS "" CACHE STRING
    "Halide targets of the kernel libraries, one per device family (cpu, opencl, cuda); a CPU entry may be a comma-separated dispatch list. Empty: HMHA_CPU_TARGET + OpenCL + CUDA")
option(HMHA_X86_64_DISPATCH
       "With HMHA_CPU_TARGET=host on x86-64: build the CPU kernels for HMHA_X86_64_DISPATCH_TARGETS, dispatched by CPU at run time"
       ON)

# The x86-64 dispatch list, most specific first. The first is what Halide's
# `host` is on an AMD Zen 4 (and Sapphire Rapids) without the tune_ flag; the
# second every AVX-512 Xeon since Skylake-SP; AVX2 + FMA since Haswell / Zen 1;
# the SSE4.1 baseline runs on any x86-64 of the last fifteen years.
set(_hmha_x86 "${Halide_CMAKE_TARGET}")
set(HMHA_X86_64_DISPATCH_TARGETS
    "${_hmha_x86}-avx-avx2-avx512-avx512_cannonlake-avx512_skylake-avx512_zen4-f16c-fma-sse41"
    "${_hmha_x86}-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41"
    "${_hmha_x86}-avx-avx2-f16c-fma-sse41"
    "${_hmha_x86}-sse41")

# ---- HMHA_TARGETS, or its default -----------------------------------------------
if (NOT HMHA_TARGETS STREQUAL "")
    set(_hmha_entries "${HMHA_TARGETS}")
else ()
    if (HMHA_CPU_TARGET STREQUAL "host" AND HMHA_X86_64_DISPATCH AND Halide_CMAKE_TARGET MATCHES "^x86-64-"
        AND Halide_HOST_TARGET STREQUAL Halide_CMAKE_TARGET)
        list(JOIN HMHA_X86_64_DISPATCH_TARGETS "," _hmha_cpu)
    else ()
        set(_hmha_cpu "${HMHA_CPU_TARGET}")
    endif ()
    set(_hmha_entries "${_hmha_cpu}")
    if (NOT CMAKE_CROSSCOMPILING)
        # The GPU families' host-side code: the CPU family's baseline, so that
        # they run wherever the CPU kernels do.
        string(REGEX REPLACE "^.*," "" _hmha_base "${_hmha_cpu}")
        if (DEFINED HMHA_OPENCL_TARGET AND NOT HMHA_OPENCL_TARGET STREQUAL "")
            list(APPEND _hmha_entries "${HMHA_OPENCL_TARGET}")
        else ()
            list(APPEND _hmha_entries "${_hmha_base}-opencl")
        endif ()
        if (DEFINED HMHA_CUDA_TARGET AND NOT HMHA_CUDA_TARGET STREQUAL "")
            list(APPEND _hmha_entries "${HMHA_CUDA_TARGET}")
        else ()
            list(APPEND _hmha_entries "${_hmha_base}-cuda-${HMHA_CUDA_CAPABILITY}")
        endif ()
    endif ()
endif ()

# ---- one entry per family and platform ---------------------------------------------
# An entry for this build's platform (Halide_CMAKE_TARGET) is a family of the
# runtime. An entry for another platform gets its libraries generated, with a
# Halide runtime of their own, for an app of that platform to link; nothing
# here links or tests them (a build for that platform does: cmake/toolchains/).
set(HMHA_FAMILIES "")
set(HMHA_OTHER_PLATFORMS "")
set(_seen "")
foreach (_entry IN LISTS _hmha_entries)
    string(STRIP "${_entry}" _entry)
    if (_entry STREQUAL "")
        continue ()
    endif ()
    string(REPLACE "," ";" _targets "${_entry}")
    set(_entry_family "")
    set(_entry_triple "")
    foreach (_t IN LISTS _targets)
        if (NOT _t MATCHES "^(host|cmake|[^-]+-[^-]+-[^-]+)(-[^-]+)*$")
            message(FATAL_ERROR "HMHA_TARGETS: '${_t}' is not a Halide target string (arch-bits-os[-feature...], or host[-feature...])")
        endif ()
        set(_triple "${CMAKE_MATCH_1}")
        if (_triple STREQUAL "host")
            set(_triple "${Halide_HOST_TARGET}")
        elseif (_triple STREQUAL "cmake")
            set(_triple "${Halide_CMAKE_TARGET}")
        endif ()
        string(REPLACE "-" ";" _features "${_t}")
        if (_t MATCHES "^(host|cmake)")
            list(REMOVE_AT _features 0)
        else ()
            list(REMOVE_AT _features 0 1 2)
        endif ()
        if ("cuda" IN_LIST _features)
            set(_family cuda)
        elseif ("opencl" IN_LIST _features)
            set(_family opencl)
        else ()
            set(_family cpu)
        endif ()
        foreach (_api IN ITEMS metal vulkan d3d12compute webgpu hexagon_dma hvx openglcompute)
            if (_api IN_LIST _features)
                message(FATAL_ERROR "HMHA_TARGETS: '${_t}': the runtime dispatches to cpu, opencl and cuda kernels only, not ${_api}")
            endif ()
        endforeach ()
        if (_entry_family AND NOT (_entry_family STREQUAL _family AND _entry_triple STREQUAL _triple))
            message(FATAL_ERROR "HMHA_TARGETS: '${_entry}' mixes families or platforms; a comma-separated entry "
                                "is the variants of one family on one platform")
        endif ()
        set(_entry_family "${_family}")
        set(_entry_triple "${_triple}")
    endforeach ()
    if ("${_entry_family}@${_entry_triple}" IN_LIST _seen)
        message(FATAL_ERROR "HMHA_TARGETS: two ${_entry_family} entries for ${_entry_triple} (the second: '${_entry}'); "
                            "list one per family (several CPU variants go in one comma-separated entry)")
    endif ()
    list(APPEND _seen "${_entry_family}@${_entry_triple}")
    string(TOUPPER ${_entry_family} _FAMILY)
    if (_entry_triple STREQUAL Halide_CMAKE_TARGET)
        list(APPEND HMHA_FAMILIES ${_entry_family})
        set(HMHA_${_FAMILY}_TARGETS "${_targets}")
    else ()
        string(REPLACE "-" "_" _id "${_entry_triple}")
        if (NOT _id IN_LIST HMHA_OTHER_PLATFORMS)
            list(APPEND HMHA_OTHER_PLATFORMS ${_id})
            set(HMHA_${_id}_FAMILIES "")
        endif ()
        list(APPEND HMHA_${_id}_FAMILIES ${_entry_family})
        set(HMHA_${_id}_${_FAMILY}_TARGETS "${_targets}")
    endif ()
endforeach ()
if (NOT "cpu" IN_LIST HMHA_FAMILIES)
    message(FATAL_ERROR "HMHA_TARGETS ('${_hmha_entries}') names no CPU target for ${Halide_CMAKE_TARGET}; "
                        "the CPU family is the default device and every build has one")
endif ()
set(_ordered "")
set(HMHA_FAMILY_DEFINITIONS "")
foreach (_family IN ITEMS cpu opencl cuda)
    string(TOUPPER ${_family} _FAMILY)
    if (_family IN_LIST HMHA_FAMILIES)
        list(APPEND _ordered ${_family})
        set(_have 1)
    else ()
        set(HMHA_${_FAMILY}_TARGETS "")
        set(_have 0)
    endif ()
    if (NOT _family STREQUAL "cpu")
        list(APPEND HMHA_FAMILY_DEFINITIONS HMHA_HAVE_${_FAMILY}=${_have})
    endif ()
endforeach ()
set(HMHA_FAMILIES "${_ordered}")

# The shared Halide runtime: the CPU baseline with every GPU API built (each
# library adds its own targets; Halide generates the runtime for the features
# they all share, plus every device API).
list(GET HMHA_CPU_TARGETS -1 HMHA_RUNTIME_TARGET)
foreach (_api IN ITEMS opencl cuda)
    if (_api IN_LIST HMHA_FAMILIES)
        string(APPEND HMHA_RUNTIME_TARGET "-${_api}")
    endif ()
endforeach ()

foreach (_family IN LISTS HMHA_FAMILIES)
    string(TOUPPER ${_family} _FAMILY)
    list(JOIN HMHA_${_FAMILY}_TARGETS ", " _shown)
    message(STATUS "HalideMHA: ${_family} kernels for ${_shown}")
endforeach ()
foreach (_id IN LISTS HMHA_OTHER_PLATFORMS)
    foreach (_family IN LISTS HMHA_${_id}_FAMILIES)
        string(TOUPPER ${_family} _FAMILY)
        list(JOIN HMHA_${_id}_${_FAMILY}_TARGETS ", " _shown)
        message(STATUS "HalideMHA: ${_family} kernels for ${_shown}: libraries only (hmha_<kernel>_${_family}_${_id}, "
                       "runtime hmha_halide_runtime_${_id}), for another platform; not linked or tested here")
    endforeach ()
endforeach ()

unset(_hmha_cpu_default)
unset(_hmha_x86)
unset(_hmha_entries)
unset(_hmha_cpu)
unset(_hmha_base)
unset(_ordered)
unset(_seen)
