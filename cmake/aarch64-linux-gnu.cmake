# Cross-compiling bbits for AArch64 Linux with Debian's cross toolchain
# (crossbuild-essential-arm64) and multiarch :arm64 packages:
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake ...
# (scripts/test-arm64.sh does it all). Tests run under qemu-aarch64 (ctest's
# emulator); QEMU_CPU in the environment picks the emulated CPU.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Multiarch libraries (/usr/lib/aarch64-linux-gnu, e.g. zlib1g-dev:arm64) and
# the cross toolchain's own root.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # flatc, ccache, pkg-config: the build machine's
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# The emulated programs load the multiarch C library (libc6:arm64, which the
# :arm64 packages bring) with its own dynamic loader: -L / . With -L
# /usr/aarch64-linux-gnu the cross toolchain's loader (libc6-arm64-cross, a
# different Debian revision of glibc 2.36) would be paired with the multiarch
# libc.so.6, which it finds first, and pthread_create hangs.
find_program(BBITS_QEMU_AARCH64 qemu-aarch64)
if(BBITS_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${BBITS_QEMU_AARCH64} -L /)
endif()
