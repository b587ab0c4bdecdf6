# Included by runtime/cli/CMakeLists.txt. `bbits bench` and `bbits calibrate`
# (cmd_bench.cpp, cmd_calibrate.cpp) are built on the benchmark harness
# (bench/, library bbits_bench: kernels, oneDNN baselines, roofline). Without
# BBITS_BENCH those two commands are left out of the binary.
if(BBITS_BENCH)
  target_link_libraries(bbits PRIVATE bbits_bench)
else()
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/cmd_bench.cpp ${CMAKE_CURRENT_SOURCE_DIR}/cmd_calibrate.cpp
                              PROPERTIES HEADER_FILE_ONLY ON)
endif()
