# `cmake --install <build> --prefix P`: everything an app needs to use HalideMHA
# without Halide, LLVM or Python (SPEC.md §5):
#
#   P/bin/hmha                               the command line
#   P/include/hmha/{hmha,safetensors}.h      the public API
#   P/include/hmha_<kernel>_<family>.h       each generated kernel, for direct calls
#   P/include/HalideRuntime.h, ...           the Halide runtime headers they need
#   P/lib/libhmha.a                          the runtime
#   P/lib/libhmha_<kernel>_<family>.a        every generated kernel library
#   P/lib/lib<halide runtime>.a              the shared Halide runtime
#   P/lib/cmake/HalideMHA/                   find_package(HalideMHA) -> HalideMHA::hmha
#
# The kernel libraries and their Halide runtimes are found from what `hmha`
# links, so a new kernel, family or target needs no change here. They are
# add_halide_library / add_halide_runtime targets: real STATIC targets when
# compiled for the host, IMPORTED ones when cross-compiled, so their archives
# are installed as files ($<TARGET_FILE>) under fixed names, and the package's
# targets are written by hand (an install(EXPORT) would drag in Halide::Runtime
# and nlohmann_json, which an app must not need).
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(HMHA_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/HalideMHA")
set(_hmha_lib_prefix "${CMAKE_STATIC_LIBRARY_PREFIX}")
set(_hmha_lib_suffix "${CMAKE_STATIC_LIBRARY_SUFFIX}")

# ---- what hmha links: generated kernels and their Halide runtime(s) ---------
set(_hmha_kernels "")
set(_hmha_runtimes "")
get_target_property(_hmha_links hmha LINK_LIBRARIES)
foreach (lib IN LISTS _hmha_links)
    if (NOT TARGET "${lib}")
        continue ()
    endif ()
    get_target_property(_fn "${lib}" Halide_LIBRARY_FUNCTION_NAME)
    if (NOT _fn)
        continue ()
    endif ()
    list(APPEND _hmha_kernels "${lib}")
    get_target_property(_rt "${lib}" Halide_LIBRARY_RUNTIME_TARGET)
    if (_rt AND NOT _rt STREQUAL "Halide::Runtime")
        list(APPEND _hmha_runtimes "${_rt}")
    endif ()
endforeach ()
list(REMOVE_DUPLICATES _hmha_kernels)
list(REMOVE_DUPLICATES _hmha_runtimes)
if (NOT _hmha_kernels OR NOT _hmha_runtimes)
    message(FATAL_ERROR "HalideMHAInstall: found no Halide kernel libraries or runtime linked by hmha")
endif ()

# ---- libraries, headers, the CLI ---------------------------------------------
install(TARGETS hmha ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(TARGETS hmha_cli RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}/runtime/include/hmha"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" FILES_MATCHING PATTERN "*.h")

foreach (lib IN LISTS _hmha_kernels _hmha_runtimes)
    install(FILES "$<TARGET_FILE:${lib}>" DESTINATION "${CMAKE_INSTALL_LIBDIR}"
            RENAME "${_hmha_lib_prefix}${lib}${_hmha_lib_suffix}")
endforeach ()

foreach (lib IN LISTS _hmha_kernels)
    # add_halide_library puts its generated header in the target's HEADERS file set.
    get_target_property(_hdr "${lib}" HEADER_SET)
    if (NOT _hdr)
        get_target_property(_dir "${lib}" BINARY_DIR)
        set(_hdr "${_dir}/${lib}.h")
    endif ()
    install(FILES ${_hdr} DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
endforeach ()

# The generated headers only forward-declare halide_buffer_t; calling a kernel
# needs HalideRuntime.h (and in practice HalideBuffer.h), and the GPU families'
# device-pointer wrapping needs the CUDA and OpenCL runtime headers.
set(_hmha_halide_headers HalideRuntime.h HalideBuffer.h HalideRuntimeCuda.h HalideRuntimeOpenCL.h)
get_target_property(_halide_rt_headers Halide::Runtime HEADER_SET)
get_target_property(_halide_rt_incdirs Halide::Runtime INTERFACE_INCLUDE_DIRECTORIES)
set(_hints "")
foreach (f IN LISTS _halide_rt_headers)
    get_filename_component(_d "${f}" DIRECTORY)
    list(APPEND _hints "${_d}")
endforeach ()
list(APPEND _hints ${_halide_rt_incdirs})
# The build machine's Halide, also when cross-compiling: not under the target's root.
find_path(HMHA_HALIDE_RUNTIME_INCLUDE_DIR HalideRuntime.h HINTS ${_hints} NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
if (NOT HMHA_HALIDE_RUNTIME_INCLUDE_DIR)
    message(FATAL_ERROR "HalideMHAInstall: HalideRuntime.h not found in Halide::Runtime's include directories (${_hints})")
endif ()
list(TRANSFORM _hmha_halide_headers PREPEND "${HMHA_HALIDE_RUNTIME_INCLUDE_DIR}/")
install(FILES ${_hmha_halide_headers} DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

# ---- the CMake package ----------------------------------------------------------
# Imported targets, in link order: hmha, then the kernels, then the runtime.
set(HMHA_PACKAGE_TARGETS "")
string(APPEND HMHA_PACKAGE_TARGETS "set(_hmha_libdir \"\${PACKAGE_PREFIX_DIR}/${CMAKE_INSTALL_LIBDIR}\")\n")
string(APPEND HMHA_PACKAGE_TARGETS "set(_hmha_incdir \"\${PACKAGE_PREFIX_DIR}/${CMAKE_INSTALL_INCLUDEDIR}\")\n")
foreach (rt IN LISTS _hmha_runtimes)
    string(APPEND HMHA_PACKAGE_TARGETS
           "\n# The Halide runtime (thread pool, memory, GPU driver loading via dlopen).\n"
           "add_library(HalideMHA::${rt} STATIC IMPORTED)\n"
           "set_target_properties(HalideMHA::${rt} PROPERTIES\n"
           "    IMPORTED_LOCATION \"\${_hmha_libdir}/${_hmha_lib_prefix}${rt}${_hmha_lib_suffix}\"\n"
           "    IMPORTED_LINK_INTERFACE_LANGUAGES CXX\n"
           "    INTERFACE_INCLUDE_DIRECTORIES \"\${_hmha_incdir}\"\n"
           "    INTERFACE_LINK_LIBRARIES \"Threads::Threads;\${CMAKE_DL_LIBS}\")\n")
endforeach ()
string(APPEND HMHA_PACKAGE_TARGETS "\n# The generated kernels, for apps that call one directly (#include <KERNEL.h>).\n")
foreach (lib IN LISTS _hmha_kernels)
    get_target_property(_rt "${lib}" Halide_LIBRARY_RUNTIME_TARGET)
    string(APPEND HMHA_PACKAGE_TARGETS
           "add_library(HalideMHA::${lib} STATIC IMPORTED)\n"
           "set_target_properties(HalideMHA::${lib} PROPERTIES\n"
           "    IMPORTED_LOCATION \"\${_hmha_libdir}/${_hmha_lib_prefix}${lib}${_hmha_lib_suffix}\"\n"
           "    IMPORTED_LINK_INTERFACE_LANGUAGES CXX\n"
           "    INTERFACE_INCLUDE_DIRECTORIES \"\${_hmha_incdir}\"\n"
           "    INTERFACE_LINK_LIBRARIES HalideMHA::${_rt})\n")
endforeach ()
list(TRANSFORM _hmha_kernels PREPEND "HalideMHA::" OUTPUT_VARIABLE _hmha_kernel_targets)
string(APPEND HMHA_PACKAGE_TARGETS
       "\n# The runtime: #include <hmha/hmha.h>; brings every library above.\n"
       "add_library(HalideMHA::hmha STATIC IMPORTED)\n"
       "set_target_properties(HalideMHA::hmha PROPERTIES\n"
       "    IMPORTED_LOCATION \"\${_hmha_libdir}/${_hmha_lib_prefix}hmha${_hmha_lib_suffix}\"\n"
       "    IMPORTED_LINK_INTERFACE_LANGUAGES CXX\n"
       "    INTERFACE_INCLUDE_DIRECTORIES \"\${_hmha_incdir}\"\n"
       "    INTERFACE_COMPILE_FEATURES cxx_std_17\n"
       "    INTERFACE_LINK_LIBRARIES \"${_hmha_kernel_targets}\")\n"
       "unset(_hmha_libdir)\nunset(_hmha_incdir)\n")

# The kernels' names (HalideMHA_KERNELS in the package), so an app can tell
# which kernels it can call directly.
set(HMHA_PACKAGE_KERNELS "${_hmha_kernels}")

configure_package_config_file(
    "${CMAKE_CURRENT_SOURCE_DIR}/cmake/HalideMHAConfig.cmake.in"
    "${CMAKE_CURRENT_BINARY_DIR}/package/HalideMHAConfig.cmake"
    INSTALL_DESTINATION "${HMHA_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
    "${CMAKE_CURRENT_BINARY_DIR}/package/HalideMHAConfigVersion.cmake"
    VERSION "${PROJECT_VERSION}"
    COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/package/HalideMHAConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/package/HalideMHAConfigVersion.cmake"
        DESTINATION "${HMHA_INSTALL_CMAKEDIR}")
