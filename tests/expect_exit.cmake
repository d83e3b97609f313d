# expect_exit(<program> <exit code> <regex of stderr> args...): runs the
# program with args in a ctest -P script and counts a failure (the caller's
# `failures`) unless it exits with that code and its stderr matches. Its
# stdout is left in the caller's `expect_exit_stdout`. Shared by
# the command-line checks of tests/bench_peers.cmake and tests/tune_cli.cmake.
function(expect_exit program code regex)
    execute_process(COMMAND ${program} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    set(expect_exit_stdout "${out}" PARENT_SCOPE)
    get_filename_component(name "${program}" NAME)
    list(JOIN ARGN " " command)
    if (NOT rc EQUAL code OR NOT err MATCHES "${regex}")
        message(NOTICE "FAILED: ${name} ${command}\n  exit ${rc} (expected ${code})\n  stderr: ${err}\n"
                       "  expected stderr to match: ${regex}")
        math(EXPR n "${failures} + 1")
        set(failures ${n} PARENT_SCOPE)
    else ()
        string(STRIP "${err}" err)
        if (NOT err STREQUAL "")
            string(PREPEND err ": ")
        endif ()
        message(STATUS "ok: ${name} ${command}: exit ${rc}${err}")
    endif ()
endfunction()
