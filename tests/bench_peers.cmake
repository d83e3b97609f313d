# The bench's C++ peers against ours (bench/mha_bench.cpp), run by ctest as
#   cmake -DBENCH=<hmha_bench> -DWORK_DIR=<dir> -P bench_peers.cmake
# For each case: `hmha_bench --case ours --dump DIR` writes our outputs, then
# the hand-written BLAS baseline (`blas`) and the kernel driver with our
# kernels (`ours-kernels`, peers/kernel_mha.cpp, which `make bench-report`
# also runs with the autoscheduled kernels) must match them (max |diff| /
# max |ours| <= 1e-4, weights too, checked by hmha_bench itself). Ours is
# checked against the float64 reference by the test suite; this keeps the
# peers the bench times honest, and the driver compiling and in step with the
# runtime's calls (its causal query chunks, need_weights rounds, batch passes
# and sdpa key classes). Then each kernel alone (`--kernel K`), as the bench
# report times them, must run, and bad command lines must be refused.
cmake_minimum_required(VERSION 3.28)

# Two threads, so that the batch passes below are the same on any machine
# (batch_passes.h: about 1 MiB of scratch a thread).
set(ENV{HL_NUM_THREADS} 2)
set(ENV{OPENBLAS_NUM_THREADS} 2)
set(ENV{OMP_NUM_THREADS} 2)

# "N,L,S,E,H [flags]": odd sizes; L > 256 with causal (the causal query chunks
# of 256 and their tail), L > 1024 with need_weights (two rounds), S past the
# long-key classes (4097), and (3, 300, 300, 256, 4), whose 1.2 MB a batch
# makes a pass per batch at 2 threads.
set(cases
    "3,17,17,24,4"
    "3,17,17,24,4 --need-weights"
    "3,17,17,24,4 --need-weights --causal"
    "3,17,9,24,4 --cross --causal"
    "3,17,9,24,4 --cross --need-weights"
    "1,1030,1030,16,2 --causal"
    "1,1030,1030,16,2 --need-weights --causal"
    "2,5,4097,32,2 --cross"
    "2,5,4097,32,2 --cross --need-weights"
    "3,300,300,256,4"
    "3,300,300,256,4 --need-weights")

set(failures 0)
function(run_case what expect)
    execute_process(COMMAND ${BENCH} ${ARGN} --min-time 0 --min-reps 1
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    string(STRIP "${out}" out)
    if (NOT rc EQUAL 0 OR NOT out MATCHES "\"ok\":true" OR NOT out MATCHES "${expect}")
        list(JOIN ARGN " " command)
        message(NOTICE "FAILED ${what}: hmha_bench ${command}\n  exit ${rc}\n  ${out}\n  ${err}")
        math(EXPR n "${failures} + 1")
        set(failures ${n} PARENT_SCOPE)
    else ()
        message(STATUS "ok ${what}: ${out}")
    endif ()
endfunction()

set(i 0)
foreach (c IN LISTS cases)
    separate_arguments(args UNIX_COMMAND "${c}")
    list(POP_FRONT args shape)
    set(dir ${WORK_DIR}/case${i})
    math(EXPR i "${i} + 1")
    file(REMOVE_RECURSE ${dir})
    file(MAKE_DIRECTORY ${dir})
    run_case("ours (${c})" "\"check\":\"reference\"" --case ours --shape ${shape} ${args} --dump ${dir})
    foreach (peer IN ITEMS blas ours-kernels)
        run_case("${peer} (${c})" "\"check\":\"matches\"" --case ${peer} --shape ${shape} ${args} --ref ${dir})
    endforeach ()
endforeach ()

foreach (kernel IN ITEMS linear sdpa masked_softmax attend head_mean)
    run_case("--kernel ${kernel}" "\"kernel\":\"${kernel}\"" --kernel ${kernel} --impl ours-kernels
             --shape 3,17,17,24,4)
endforeach ()

# Bad command lines are refused with a message naming what is wrong (exit 2),
# a case that cannot run says why (exit 1), never a crash, a silently ignored
# option or a default case run instead.
include(${CMAKE_CURRENT_LIST_DIR}/expect_exit.cmake)
expect_exit(${BENCH} 2 "unknown option --causl for --case" --case ours --shape 3,17,17,24,4 --causl)
expect_exit(${BENCH} 2 "unknown option --shape \\(expected --hmha-device" --shape 3,17,17,24,4)
expect_exit(${BENCH} 2 "--shape: expected N,L,S,E,H \\(positive integers\\), got '3,17,0,24,4'"
            --case ours --shape 3,17,0,24,4)
expect_exit(${BENCH} 2 "--shape: expected H dividing E, got E = 24, H = 5" --case blas --shape 3,17,17,24,5)
expect_exit(${BENCH} 2 "--min-time: expected seconds >= 0, got 'abc'"
            --case ours --shape 3,17,17,24,4 --min-time abc)
expect_exit(${BENCH} 2 "--min-reps: expected a count >= 1, got '0'" --kernel sdpa --impl ours-kernels --min-reps 0)
expect_exit(${BENCH} 2 "--case and --kernel are two ways to run" --case ours --kernel sdpa)
expect_exit(${BENCH} 2 "unexpected argument 'ours'" --case --shape 3,17,17,24,4 ours)
expect_exit(${BENCH} 2 "unrecognized command-line flag: --benchmark_filtr" --benchmark_filtr=nothing)
expect_exit(${BENCH} 1 "hmha_bench: nope: unknown implementation 'nope'" --case nope --shape 3,17,17,24,4)
expect_exit(${BENCH} 1 "hmha_bench: --kernel nope --impl ours-kernels: unknown kernel 'nope'" --kernel nope
            --impl ours-kernels --shape 3,17,17,24,4)
expect_exit(${BENCH} 1 "cannot write ${WORK_DIR}/missing/query.bin"
            --case ours --shape 3,17,17,24,4 --dump ${WORK_DIR}/missing)

if (failures GREATER 0)
    message(FATAL_ERROR "bench peers: ${failures} run(s) failed")
endif ()
message(STATUS "bench peers: every peer matches ours")
