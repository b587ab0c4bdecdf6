# Runs `bbits eval` on preprocessed arrays and on the raw data set and checks
# that both report the same number of correct predictions.
#   cmake -DBBITS=... [-DLAUNCHER="qemu-aarch64 -L /"] -DMODEL=... -DX=... -DY=... -DN=... -P compare_eval.cmake
separate_arguments(launcher UNIX_COMMAND "${LAUNCHER}")
execute_process(COMMAND ${launcher} ${BBITS} eval ${MODEL} --inputs ${X} --labels ${Y} RESULT_VARIABLE rc1 OUTPUT_VARIABLE a ERROR_VARIABLE ea)
execute_process(COMMAND ${launcher} ${BBITS} eval ${MODEL} --dataset fashion-mnist --limit ${N} RESULT_VARIABLE rc2 OUTPUT_VARIABLE b ERROR_VARIABLE eb)
message(STATUS "--inputs/--labels:\n${a}${ea}--dataset:\n${b}${eb}")
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "bbits eval failed")
endif()
string(REGEX MATCH "samples: ${N}\ncorrect: ([0-9]+)" m1 "${a}")
set(c1 "${CMAKE_MATCH_1}")
string(REGEX MATCH "samples: ${N}\ncorrect: ([0-9]+)" m2 "${b}")
set(c2 "${CMAKE_MATCH_1}")
if(c1 STREQUAL "" OR NOT c1 STREQUAL c2)
  message(FATAL_ERROR "correct counts differ: arrays '${c1}', dataset '${c2}'")
endif()
message(STATUS "eval arrays == dataset: ${c1} of ${N} correct")
