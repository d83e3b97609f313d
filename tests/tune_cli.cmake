# The CPU tuner's command line (bench/tune/tune.cpp), run by ctest as
#   cmake -DTUNE=<hmha_tune> -DWORK_DIR=<dir> -P tune_cli.cmake
# Bad --variants (a param the kernel does not have, a value it cannot parse,
# one its generator refuses) end the tuner with exit code 2 and a message
# naming the kernel, the param and the reason, before any sweep: Halide's
# errors are not std::exceptions, and the tuner once let them end it in
# std::terminate (exit 134, no message). Then a small sweep of two kernels
# must finish and write a JSON file holding both, each winner one of the
# variants swept, and the one its second look (bench/tune/confirm.h) says it
# wrote: a candidate confirmed against the defaults, or the defaults. (Variants are given one --variants each: a ';' inside a
# CMake argument would split it.)
cmake_minimum_required(VERSION 3.28)

set(ENV{HL_NUM_THREADS} 2)
file(MAKE_DIRECTORY "${WORK_DIR}")
set(failures 0)

include(${CMAKE_CURRENT_LIST_DIR}/expect_exit.cmake)

set(out "${WORK_DIR}/tuned.json")
file(REMOVE "${out}")
set(shape --shapes "2,17,17,24,4")
expect_exit(${TUNE} 2 "hmha_tune: --variants: linear does not take bogus=3: .*no GeneratorParam named: bogus"
            --kernels linear ${shape} --variants tile_o=32 --variants bogus=3 --out "${out}")
expect_exit(${TUNE} 2 "hmha_tune: --variants: linear does not take tile_o=abc: .*abc"
            --kernels linear ${shape} --variants "tile_o=abc" --out "${out}")
# A param one of the kernels has and another has not.
expect_exit(${TUNE} 2 "hmha_tune: --variants: linear does not take query_block=8"
            --kernels sdpa_rows,linear ${shape} --variants "query_block=8" --out "${out}")
expect_exit(${TUNE} 2
            "hmha_tune: --variants: sdpa_rows does not take key_chunk=3: .*key_chunk: expected 0 or a multiple of"
            --kernels sdpa_rows ${shape} --variants "key_chunk=3" --out "${out}")
expect_exit(${TUNE} 2 "hmha_tune: --kernels: unknown kernel 'sdpa_row'" --kernels sdpa_row --out "${out}")
expect_exit(${TUNE} 2 "hmha_tune: --shapes: expected H dividing E, got E = 24, H = 5 in '2,17,17,24,5'"
            --shapes "2,17,17,24,5" --out "${out}")
expect_exit(${TUNE} 2 "hmha_tune: --shapes: expected N,L,S,E,H \\(positive integers\\), got '2,17,-17,24,4'"
            --shapes "2,17,-17,24,4" --out "${out}")
expect_exit(${TUNE} 2 "hmha_tune: --shapes: expected sizes below 2\\^31, got '1,1,1,4294967296,1'"
            --shapes "1,1,1,4294967296,1" --out "${out}")
expect_exit(${TUNE} 2 "hmha_tune: --confirm-rounds: expected a whole number from 0 to 100, got '2.5'"
            --kernels head_mean ${shape} --confirm-rounds 2.5 --out "${out}")
expect_exit(${TUNE} 2 "hmha_tune: --margin: expected a number from 0 to 0.5, got 'x'"
            --kernels head_mean ${shape} --margin x --out "${out}")
if (EXISTS "${out}")
    message(NOTICE "FAILED: a refused command line wrote ${out}")
    math(EXPR failures "${failures} + 1")
endif ()

set(incumbent "${WORK_DIR}/incumbent.json")
file(WRITE "${incumbent}" "{\"kernels\": {\"sdpa_rows\": [16]}}")
expect_exit(${TUNE} 2 "hmha_tune: incumbent: .*incumbent.json: expected a tuned file .*\"sdpa_rows\" is not an object"
            --kernels sdpa_rows ${shape} --incumbent "${incumbent}" --out "${out}")

# A sweep that runs: odd sizes, two kernels, two variants after the defaults,
# and sdpa_rows' incumbent (params of an earlier file, not swept).
file(WRITE "${incumbent}" "{\"target\": \"host\", \"kernels\": {\"sdpa_rows\": {\"query_block\": 16}}}")
expect_exit(${TUNE} 0 "" --kernels sdpa_rows,head_mean ${shape} --variants query_block=4 --variants query_block=8
            --confirm-rounds 3 --incumbent "${incumbent}" --out "${out}")
set(table "${expect_exit_stdout}")
if (EXISTS "${out}")
    file(READ "${out}" json)
    string(JSON target ERROR_VARIABLE bad GET "${json}" target)
    if (bad OR target STREQUAL "")
        message(NOTICE "FAILED: ${out} has no target: ${bad}\n${json}")
        math(EXPR failures "${failures} + 1")
    endif ()
    foreach (kernel sdpa_rows head_mean)
        string(JSON params ERROR_VARIABLE bad GET "${json}" kernels ${kernel})
        if (bad)
            message(NOTICE "FAILED: ${out} has no ${kernel}: ${bad}\n${json}")
            math(EXPR failures "${failures} + 1")
            continue()
        endif ()
        # The winner: the defaults (sdpa_rows' class default query_block=64,
        # head_mean's none), one of the variants or sdpa_rows' incumbent.
        string(JSON qb ERROR_VARIABLE none GET "${params}" query_block)
        if (none)
            set(qb "")
        endif ()
        # The table's lines for this kernel: its summary, then the second
        # look's, which name the candidate written, or say the defaults are.
        if (kernel STREQUAL "sdpa_rows")
            set(defaults_qb 64)
        else ()
            set(defaults_qb "")
        endif ()
        set(expected "none")
        if (table MATCHES "\n${kernel} [^\n]*\n((  [^\n]*\n)*)")
            set(lines "${CMAKE_MATCH_1}")
            if (kernel STREQUAL "sdpa_rows" AND NOT lines MATCHES "  confirm query_block=16 [^\n]*, the incumbent\\)")
                message(NOTICE "FAILED: sdpa_rows' incumbent query_block=16 was not confirmed\n${table}")
                math(EXPR failures "${failures} + 1")
            endif ()
            if (lines MATCHES "  confirm query_block=([0-9]+) [^\n]*: written\n")
                set(expected "${CMAKE_MATCH_1}")
            elseif (lines MATCHES "(no variant beat the defaults|none faster than the defaults)")
                set(expected "${defaults_qb}")
            endif ()
        endif ()
        if (NOT qb MATCHES "^(4|8|16|64|)$")
            message(NOTICE "FAILED: ${kernel}'s winner query_block=${qb} was not swept\n${json}")
            math(EXPR failures "${failures} + 1")
        elseif (NOT qb STREQUAL expected)
            message(NOTICE "FAILED: ${kernel}: the file holds query_block=${qb}, its confirmation says "
                           "'${expected}'\n${table}\n${json}")
            math(EXPR failures "${failures} + 1")
        else ()
            message(STATUS "ok: ${kernel}: ${params}, as confirmed")
        endif ()
    endforeach ()
else ()
    message(NOTICE "FAILED: the sweep wrote no ${out}")
    math(EXPR failures "${failures} + 1")
endif ()

if (failures GREATER 0)
    message(FATAL_ERROR "${failures} tuner check(s) failed")
endif ()
