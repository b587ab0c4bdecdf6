// bbits training — data-parallel training on LibTorch's distributed engine
// (c10d, Gloo backend over TCP). Rank 0 hosts the rendezvous (a c10d
// TCPStore); every rank then joins one Gloo process group. Include only where
// LibTorch is needed; the c10d headers stay inside process_group.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "bbits/training/distributed.h"

namespace bbits::train {

class Net;

class ProcessGroup {
 public:
  // Joins the world described by `c` (c.world_size > 1). Rank 0 listens on
  // c.master_port; the others connect to c.master_addr:c.master_port, retrying
  // until c.timeout_s. Gloo's connections go over the local address that
  // routes to the master (or the interface in $GLOO_SOCKET_IFNAME). Throws
  // std::runtime_error saying which step of the rendezvous failed.
  explicit ProcessGroup(const DistConfig& c);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const;
  int size() const;
  const DistConfig& config() const;

  // Collectives (dense contiguous CPU tensors, in place). When a peer dies or
  // stays silent past the time-out they throw std::runtime_error naming the
  // lost rank(s) and `what` (e.g. "the gradient all-reduce of epoch 2, step 17").
  void allreduce_sum(at::Tensor& t, const std::string& what);
  void broadcast(at::Tensor& t, int root, const std::string& what);
  void barrier(const std::string& what);

 private:
  [[noreturn]] void fail(const std::string& what, const std::string& cause);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every parameter and batch-norm running statistic of `net` from rank 0, so
// all ranks start from the same weights, ranges and gates.
void broadcast_state(ProcessGroup& pg, Net& net);

// Throws std::runtime_error unless every rank sees the same bytes in each of
// `paths` (a missing file counts as its own value): names the ranks whose
// files differ from rank 0's. `what` says what the files are for.
void check_same_files(ProcessGroup& pg, const std::vector<std::string>& paths, const std::string& what);

// One all-reduce after backward on a rank's share of the global batch
// (`share` = its images / the global batch's; the loss was scaled so that the
// sum over ranks is the global batch's loss):
//  - the gradient of every trainable parameter (weights, biases, batch-norm
//    affine, log alphas, x_max) summed over ranks; a gradient no rank has
//    stays undefined (the optimiser skips it, as in a single process);
//  - the batch-norm running statistics: sum over ranks of share x statistic;
//  - `stats` (per-batch sums for the log) summed.
// Every rank ends with the same gradients, statistics and stats, to the bit.
void reduce_step(ProcessGroup& pg, Net& net, double share, std::vector<double>& stats, const std::string& what);

}  // namespace bbits::train
