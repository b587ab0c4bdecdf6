# Installs the runtime into a temporary prefix, then builds and runs a tiny
# outside application against it: with find_package(bbits) (C++ and C) or with
# pkg-config (MODE=pkgconfig).
#   cmake -DBUILD_DIR=... -DAPP_DIR=... -DWORK_DIR=... -DMODEL=... -DMODE=cmake|pkgconfig
#         [-DGENERATOR=Ninja] [-DPKG_CONFIG=...] [-DC_COMPILER=...] [-DCXX_COMPILER=...]
#         [-DEXTRA_FLAGS="-fsanitize=..."] -P run_install_test.cmake
cmake_minimum_required(VERSION 3.25)
foreach(v BUILD_DIR APP_DIR WORK_DIR MODEL MODE)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_install_test.cmake: ${v} not set")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "$ ${ARGN}\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
  set(LAST_OUTPUT "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(PREFIX ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX} --component runtime)

# The installed CLI works from its new place.
run(${PREFIX}/bin/bbits inspect ${MODEL})
if(NOT LAST_OUTPUT MATCHES "relative BOPs")
  message(FATAL_ERROR "installed bbits inspect printed no totals")
endif()

if(MODE STREQUAL "cmake")
  set(gen)
  # ccache, compilers: inherit nothing from the parent build but the compilers
  # (and, in sanitizer builds, the sanitizer flags).
  if(GENERATOR)
    set(gen -G ${GENERATOR})
  endif()
  run(${CMAKE_COMMAND} -S ${APP_DIR} -B ${WORK_DIR}/app-build ${gen} -DCMAKE_BUILD_TYPE=Release
      -DCMAKE_PREFIX_PATH=${PREFIX} -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
      "-DCMAKE_C_FLAGS=${EXTRA_FLAGS}" "-DCMAKE_CXX_FLAGS=${EXTRA_FLAGS}")
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/app-build)
  run(${WORK_DIR}/app-build/app_cpp ${MODEL})
  if(NOT LAST_OUTPUT MATCHES "cpp app: bbits [0-9.]+, 7 layers, top class [0-9]+\ncpp app: error caught: /nonexistent.bbm: cannot open")
    message(FATAL_ERROR "unexpected output of app_cpp")
  endif()
  run(${WORK_DIR}/app-build/app_c ${MODEL})
  if(NOT LAST_OUTPUT MATCHES "c app: bbits [0-9.]+, top class [0-9]+")
    message(FATAL_ERROR "unexpected output of app_c")
  endif()
elseif(MODE STREQUAL "pkgconfig")
  file(GLOB_RECURSE pcs ${PREFIX}/*/bbits.pc)
  list(LENGTH pcs npc)
  if(NOT npc EQUAL 1)
    message(FATAL_ERROR "expected one installed bbits.pc, found: ${pcs}")
  endif()
  get_filename_component(pcdir ${pcs} DIRECTORY)
  set(ENV{PKG_CONFIG_PATH} ${pcdir})
  run(${PKG_CONFIG} --cflags bbits)
  string(STRIP "${LAST_OUTPUT}" cflags)
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  run(${PKG_CONFIG} --libs bbits)
  string(STRIP "${LAST_OUTPUT}" libs)
  separate_arguments(libs UNIX_COMMAND "${libs}")
  run(${PKG_CONFIG} --variable=libdir bbits)
  string(STRIP "${LAST_OUTPUT}" libdir)
  separate_arguments(extra UNIX_COMMAND "${EXTRA_FLAGS}")
  file(MAKE_DIRECTORY ${WORK_DIR}/pc)
  run(${C_COMPILER} ${extra} ${APP_DIR}/main.c ${cflags} ${libs} -Wl,-rpath,${libdir} -o ${WORK_DIR}/pc/app_c)
  run(${WORK_DIR}/pc/app_c ${MODEL})
  run(${CXX_COMPILER} ${extra} -std=c++20 ${APP_DIR}/main.cpp ${cflags} ${libs} -Wl,-rpath,${libdir} -o ${WORK_DIR}/pc/app_cpp)
  run(${WORK_DIR}/pc/app_cpp ${MODEL})
else()
  message(FATAL_ERROR "MODE must be cmake or pkgconfig")
endif()
message(STATUS "install test (${MODE}) passed")
