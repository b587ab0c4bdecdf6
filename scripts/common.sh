# Shared by scripts/demo.sh and scripts/test.sh: install what is missing from
# Debian 12 packages (as root), then configure and build into build/.
set -euo pipefail

BBITS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BBITS_BUILD="${BBITS_BUILD:-$BBITS_ROOT/build}"
BBITS_JOBS="${BBITS_JOBS:-$(nproc)}"

BBITS_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libdnnl-dev ocl-icd-opencl-dev opencl-headers
  libxsimd-dev libbenchmark-dev libgtest-dev libgmock-dev
  libfmt-dev libflatbuffers-dev flatbuffers-compiler
  libcli11-dev nlohmann-json3-dev zlib1g-dev
  libtorch-dev libgloo-dev libopenblas0
  dataset-fashion-mnist
  clang libclang-rt-14-dev
  gnuplot-nox
)

# AArch64 cross-build and emulation (scripts/test-arm64.sh): Debian's cross
# toolchain, qemu-user, and the :arm64 libraries the build links (multiarch,
# beside the native ones). oneDNN's arm64 headers cannot be installed beside
# the amd64 ones (dnnl_config.h differs), so test-arm64.sh unpacks
# libdnnl-dev:arm64 into its build directory; libdnnl2:arm64 is installed.
BBITS_ARM64_PACKAGES=(
  crossbuild-essential-arm64 qemu-user
  zlib1g-dev:arm64 libfmt-dev:arm64 libflatbuffers-dev:arm64 libxsimd-dev:arm64
  libgtest-dev:arm64 libgmock-dev:arm64 libdnnl2:arm64
)

bbits_install_arm64_deps() {
  local missing=()
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    missing=("${BBITS_ARM64_PACKAGES[@]}")
  else
    for p in "${BBITS_ARM64_PACKAGES[@]}"; do
      if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
      fi
    done
  fi
  if ((${#missing[@]})); then
    echo "bbits: installing Debian packages (arm64): ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
      echo "bbits: installing packages needs root (run as root, or: dpkg --add-architecture arm64 and install ${missing[*]})" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    dpkg --add-architecture arm64
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

bbits_install_deps() {
  local missing=()
  for p in "${BBITS_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    echo "bbits: installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
      echo "bbits: installing packages needs root (run as root, or install: ${missing[*]})" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# bbits_configure BUILD_DIR [extra cmake args...]
bbits_configure() {
  local dir="$1"; shift
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
  export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-10G}"
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$BBITS_ROOT}"
  cmake -S "$BBITS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
}

bbits_build() {
  local dir="$1"; shift
  cmake --build "$dir" -j "$BBITS_JOBS" "$@"
}
