# Tuned register tiles reach every variant of a dispatch build (one params
# list for the AVX-512, AVX2 and SSE4.1 variants of a kernel), and a tile
# tuned where there are 32 vector registers would spill where there are 16.
# Also linear's register-file defaults, W packed on 16-register targets only.
# schedules/cpu/defaults.h keeps a tile that fits and gives a 16-register
# target its default instead. This generates each register-tiled kernel's
# statement for an AVX-512 and an AVX2 target with tiles that fit only the
# first (the shipped host.json's 8-query score tiles; 64-float linear tiles)
# and checks the sizes of the tiles' register blocks in the statements.
#
#   cmake -DGENERATOR=<hmha_generators> -DWORK_DIR=<dir> -DX86=<x86-64-linux> -P register_tiles.cmake
set(avx512 "${X86}-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41-no_runtime")
set(avx2 "${X86}-avx-avx2-f16c-fma-sse41-no_runtime")

# check(<generator> <target> <expected regex> <params...>); a regex starting
# with "!" must not match.
function(check generator target expected)
    string(MAKE_C_IDENTIFIER "${generator}_${target}_${ARGN}" name)
    execute_process(COMMAND "${GENERATOR}" -g ${generator} -o "${WORK_DIR}" -e stmt -f ${name}
                            target=${target} ${ARGN}
                    RESULT_VARIABLE rc ERROR_VARIABLE err)
    if (NOT rc EQUAL 0)
        message(SEND_ERROR "${generator} ${target} ${ARGN}: the generator failed (${rc}): ${err}")
        return()
    endif ()
    file(READ "${WORK_DIR}/${name}.stmt" stmt)
    if (expected MATCHES "^!(.*)")
        set(unwanted "${CMAKE_MATCH_1}")
        if (stmt MATCHES "${unwanted}")
            message(SEND_ERROR "${generator} ${target} ${ARGN}: '${unwanted}' must not be in the statement, got '${CMAKE_MATCH_0}'")
        else ()
            message(STATUS "ok: ${generator} ${target} ${ARGN}: no '${unwanted}'")
        endif ()
        return()
    endif ()
    if (stmt MATCHES "${expected}")
        message(STATUS "ok: ${generator} ${target} ${ARGN}: '${CMAKE_MATCH_0}'")
    else ()
        string(REGEX MATCH "allocate (dot|prod)[^\n]*" got "${stmt}")
        message(SEND_ERROR "${generator} ${target} ${ARGN}: expected '${expected}' in the statement, got '${got}'")
    endif ()
endfunction()

# Q.K^T tiles: 2 vectors of keys x rows queries (dot's stack block).
# 8 rows: 2 x 16 x 8 floats with AVX-512; AVX2 falls back to its 4 rows (2 x 8 x 4), not 2 x 8 x 8.
check(sdpa ${avx512} "allocate dot\\$1\\[float32 \\* 256\\]" score_tile_rows=8)
# The online sdpa on AVX2 (defaults.h, sdpa_tiles): 6-row tiles for both
# products (2 x 8 x 6, its P.V block too) in query blocks of whole tiles (32 -> 30).
check(sdpa ${avx2} "allocate dot\\$1\\[float32 \\* 96\\]" score_tile_rows=8)
check(sdpa ${avx2} "allocate block_pv\\[float32 \\* 96\\]" score_tile_rows=8)
check(sdpa ${avx2} "allocate block_sum\\[float32 \\* 30\\]" score_tile_rows=8 query_block=32)
# 6 rows fit 16 registers (12 accumulators, 2 vectors of K^T, a broadcast): kept.
check(sdpa ${avx2} "allocate dot\\$1\\[float32 \\* 96\\]" score_tile_rows=6)
# A 4-row score tile asked for, where it fits: 4-row tiles in the 32-query block.
check(sdpa ${avx2} "allocate block_pv\\[float32 \\* 64\\]" score_tile_rows=4)
check(sdpa ${avx2} "allocate block_sum\\[float32 \\* 32\\]" score_tile_rows=4 query_block=32)
check(sdpa_rows ${avx512} "allocate dot\\$1\\[float32 \\* 256\\]" score_tile_rows=8)
check(sdpa_rows ${avx2} "allocate dot\\$1\\[float32 \\* 64\\]" score_tile_rows=8)
check(masked_softmax ${avx2} "allocate dot\\$1\\[float32 \\* 64\\]" score_tile_rows=8)
check(softmax_attend_mean ${avx2} "allocate dot\\$1\\[float32 \\* 64\\]" score_tile_rows=8)
# linear: (tile_o / vector) x unroll_r accumulators. 64 x 4 fits AVX-512 (4 x 4);
# with AVX2 it is 8 x 4 vectors: the AVX2 default, 16 x 6, instead.
check(linear ${avx512} "allocate prod\\[float32 \\* 64 \\* 4\\]" tile_o=64 unroll_r=4)
check(linear ${avx2} "allocate prod\\[float32 \\* 16 \\* 6\\]" tile_o=64 unroll_r=4)
check(linear ${avx2} "allocate prod\\[float32 \\* 24 \\* 4\\]" tile_o=24 unroll_r=4)
# The defaults by register file (default_linear_tile), and W's panel packed
# (schedules/cpu/linear.h: a tile_o x K copy of W per task) with 16 registers only.
check(linear ${avx512} "allocate prod\\[float32 \\* 64 \\* 4\\]")
check(linear ${avx2} "allocate weight_t_im_in_prod[^\n]*float32 \\* 16 \\* x\\.extent\\.0")
check(linear ${avx2} "allocate prod\\[float32 \\* 16 \\* 6\\]")
check(linear ${avx512} "!allocate weight_t_im_in_prod")
check(linear ${avx512} "allocate weight_t_im_in_prod" pack_w=true)
check(linear ${avx2} "!allocate weight_t_im_in_prod" pack_w=false)
