// bbits training — data-parallel training over several processes or machines
// (docs/TRAINING.md, "Distributed runs"). Torch-free: the options and the
// environment, the share of a global batch each rank takes, the fingerprint
// that checks every rank resumes from the same files, and the local launcher
// behind `bbits-train --nproc N`. The communication itself (c10d with the
// Gloo backend) is in process_group.h.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace bbits::train {

struct DistConfig {
  int world_size = 1;  // 1: a single process, nothing distributed
  int rank = 0;
  std::string master_addr = "127.0.0.1";  // where rank 0 hosts the rendezvous (a c10d TCPStore)
  int master_port = 29500;
  double timeout_s = 300;  // rendezvous, every collective, and how long a silent peer may take
  bool enabled() const { return world_size > 1; }
};

// What the command line gave (unset: not given).
struct DistOptions {
  std::optional<int> world_size, rank, master_port;
  std::optional<std::string> master_addr;
  double timeout_s = 300;
};

// The environment as a lookup (std::getenv in the program, a map in tests).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_environment();

// Command line over environment (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT,
// as torchrun sets them) over the defaults. Throws std::invalid_argument
// naming the option or variable: a value that is not a whole number, world
// size < 1, rank outside [0, world size), port outside 1..65535, timeout not > 0.
DistConfig resolve_dist_config(const DistOptions& cli, const EnvLookup& env);

// Rank `rank`'s share [begin, end) of `n` consecutive items: begin = n r / W,
// end = n (r + 1) / W. The shares of ranks 0..W-1 are disjoint, in rank order,
// differ in size by at most one, and together are all n items.
struct Shard {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
Shard shard_of(int64_t n, int world_size, int rank);

// FNV-1a (64 bit) of a file's bytes; 0 for a file that does not exist.
// Throws std::runtime_error naming a file that exists but cannot be read.
uint64_t file_fingerprint(const std::string& path);

// A TCP port that is free on `addr` right now (the kernel's choice).
int free_tcp_port(const std::string& addr = "127.0.0.1");

// This program's executable (/proc/self/exe).
std::string self_executable();

// `bbits-train --nproc N`: runs `program args...` N times as ranks 0..N-1 of
// one local world (environment WORLD_SIZE, RANK, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT from `world`) and waits for all.
// When one rank fails (non-zero exit or a signal) the others get `grace_s`
// seconds to stop on their own (they notice the lost peer and say so), then
// SIGTERM, then after 5 s SIGKILL. SIGINT and SIGTERM to the launcher are
// passed on to the ranks. Writes one line per failed rank to `err` and returns
// 0 when every rank succeeded, else the first failure's status (the exit
// code, or 128 + the signal). Throws std::runtime_error when a rank cannot be
// started (the ranks already started are stopped first).
int launch_local_ranks(int nproc, const std::string& program, const std::vector<std::string>& args,
                       const DistConfig& world, double grace_s, std::ostream& err);

}  // namespace bbits::train
