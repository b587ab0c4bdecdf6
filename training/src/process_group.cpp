// Data-parallel training on c10d's Gloo process group (process_group.h).
#include "bbits/training/process_group.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "bbits/training/network.h"

namespace bbits::train {

namespace {

using Ms = std::chrono::milliseconds;

Ms to_ms(double seconds) { return Ms(static_cast<int64_t>(seconds * 1000.0)); }

// The local IPv4 address of the route to `host` (a connected UDP socket sends
// nothing): the interface the other ranks can reach this one on, the same
// interface the master is reached through.
std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || !res)
    throw std::runtime_error("cannot resolve the master address '" + host + "': " + ::gai_strerror(rc));
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  std::string out;
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    char buf[INET_ADDRSTRLEN] = {};
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0 &&
        ::inet_ntop(AF_INET, &sa.sin_addr, buf, sizeof buf))
      out = buf;
  }
  const std::string err = std::strerror(errno);
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(res);
  if (out.empty()) throw std::runtime_error("no route to the master address '" + host + "': " + err);
  return out;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return (ranks.size() == 1 ? "rank " : "ranks ") + s;
}

}  // namespace

struct ProcessGroup::Impl {
  DistConfig cfg;
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

ProcessGroup::ProcessGroup(const DistConfig& c) : impl_(std::make_unique<Impl>()) {
  if (!c.enabled()) throw std::invalid_argument("ProcessGroup: world size must be > 1");
  impl_->cfg = c;
  const std::string where = fmt::format("{}:{}", c.master_addr, c.master_port);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(c.master_port);
  so.isServer = c.rank == 0;
  so.numWorkers = static_cast<size_t>(c.world_size);
  so.waitWorkers = true;
  so.timeout = to_ms(c.timeout_s);
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(c.master_addr, so);
  } catch (const std::exception& e) {
    if (c.rank == 0)
      throw std::runtime_error(fmt::format(
          "rank 0 could not host the rendezvous on port {} or not every one of the {} ranks joined within {} s "
          "(--dist-timeout): {}",
          c.master_port, c.world_size, c.timeout_s, e.what()));
    throw std::runtime_error(fmt::format("rank {} could not join the rendezvous at {} (hosted by rank 0) within {} s "
                                         "(--dist-timeout): {}",
                                         c.rank, where, c.timeout_s, e.what()));
  }
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(to_ms(c.timeout_s));
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(local_address_towards(c.master_addr, c.master_port)));
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, c.rank, c.world_size, opts);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("rank {} could not connect to the other ranks (Gloo) within {} s: {}", c.rank,
                                         c.timeout_s, e.what()));
  }
}

ProcessGroup::~ProcessGroup() {
  // The process group before the store it rendezvoused through.
  if (impl_) {
    impl_->pg.reset();
    impl_->store.reset();
  }
}

int ProcessGroup::rank() const { return impl_->cfg.rank; }
int ProcessGroup::size() const { return impl_->cfg.world_size; }
const DistConfig& ProcessGroup::config() const { return impl_->cfg; }

void ProcessGroup::fail(const std::string& what, const std::string& cause) {
  const DistConfig& c = impl_->cfg;
  std::vector<int> lost;
  std::string how;
  if (c.world_size == 2) {
    lost.push_back(1 - c.rank);
  } else {
    // Which peers are still there? Every rank whose collective failed checks
    // in at the rendezvous; a rank that has not within a few seconds is lost
    // (or stuck). The rendezvous lives in rank 0: if it no longer answers,
    // rank 0 is gone.
    try {
      auto& store = *impl_->store;
      store.setTimeout(Ms(5000));
      store.set(fmt::format("bbits/failed/{}", c.rank), std::vector<uint8_t>{1});
      const auto until = std::chrono::steady_clock::now() + std::min(Ms(5000), to_ms(c.timeout_s));
      for (;;) {
        lost.clear();
        for (int r = 0; r < c.world_size; ++r)
          if (r != c.rank && !store.check({fmt::format("bbits/failed/{}", r)})) lost.push_back(r);
        if (lost.empty() || std::chrono::steady_clock::now() >= until) break;
        std::this_thread::sleep_for(Ms(200));
      }
      how = " (did not answer within 5 s after the failure)";
    } catch (const std::exception&) {
      lost = {0};
      how = fmt::format(" (its rendezvous at {}:{} no longer answers)", c.master_addr, c.master_port);
    }
  }
  throw std::runtime_error(fmt::format(
      "rank {} lost contact with {}{}: {} failed (a peer process died, or stayed silent longer than --dist-timeout {} "
      "s): {}",
      c.rank, rank_list(lost), how, what, c.timeout_s, cause));
}

void ProcessGroup::allreduce_sum(at::Tensor& t, const std::string& what) {
  std::vector<at::Tensor> v{t};
  try {
    impl_->pg->allreduce(v)->wait();
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
}

void ProcessGroup::broadcast(at::Tensor& t, int root, const std::string& what) {
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  try {
    impl_->pg->broadcast(v, o)->wait();
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
}

void ProcessGroup::barrier(const std::string& what) {
  try {
    impl_->pg->barrier()->wait();
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
}

// ---- data-parallel helpers ---------------------------------------------------
namespace {

// Flattens tensors into one float32 buffer and back.
struct Flat {
  std::vector<at::Tensor> parts;
  int64_t numel = 0;
  void add(const at::Tensor& t) {
    parts.push_back(t);
    numel += t.numel();
  }
  at::Tensor pack() const {
    at::Tensor buf = at::empty({numel}, at::kFloat);
    int64_t off = 0;
    for (const auto& t : parts) {
      buf.narrow(0, off, t.numel()).copy_(t.detach().reshape({-1}));
      off += t.numel();
    }
    return buf;
  }
  void unpack(const at::Tensor& buf) {
    at::NoGradGuard ng;
    int64_t off = 0;
    for (auto& t : parts) {
      t.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
};

// The batch-norm running statistics in use (layers not yet folded).
std::vector<at::Tensor> running_statistics(const Net& net) {
  std::vector<at::Tensor> r;
  for (const auto& n : net.graph().nodes) {
    auto l = net.layer(n.name);
    if (!l || !l->running_mean.defined()) continue;
    r.push_back(l->running_mean);
    r.push_back(l->running_var);
  }
  return r;
}

std::vector<at::Tensor> trainable_parameters(const Net& net) {
  std::vector<at::Tensor> r = net.weight_parameters();
  for (auto& t : net.gate_parameters()) r.push_back(t);
  for (auto& t : net.range_parameters()) r.push_back(t);
  return r;
}

}  // namespace

void broadcast_state(ProcessGroup& pg, Net& net) {
  Flat f;
  for (const auto& t : net.parameters()) f.add(t);
  for (const auto& t : net.buffers()) f.add(t);
  at::Tensor buf = f.pack();
  pg.broadcast(buf, 0, "the broadcast of the initial parameters from rank 0");
  f.unpack(buf);
}

void check_same_files(ProcessGroup& pg, const std::vector<std::string>& paths, const std::string& what) {
  const int64_t n = static_cast<int64_t>(paths.size());
  at::Tensor mine = at::empty({n}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t h = file_fingerprint(paths[static_cast<size_t>(i)]);
    int64_t s = 0;
    std::memcpy(&s, &h, sizeof s);
    mine[i] = s;
  }
  at::Tensor root = mine.clone();
  pg.broadcast(root, 0, "the comparison of the " + what + " files");
  at::Tensor differs = at::zeros({pg.size()}, at::kLong);
  differs[pg.rank()] = at::equal(mine, root) ? 0 : 1;
  pg.allreduce_sum(differs, "the comparison of the " + what + " files");
  std::vector<int> bad;
  for (int r = 0; r < pg.size(); ++r)
    if (differs[r].item<int64_t>() != 0) bad.push_back(r);
  if (bad.empty()) return;
  std::string files;
  for (const auto& p : paths) files += (files.empty() ? "'" : ", '") + p + "'";
  throw std::runtime_error(fmt::format("{} of {} differ from rank 0's ({}): every rank must read the same files",
                                       what, rank_list(bad), files));
}

void reduce_step(ProcessGroup& pg, Net& net, double share, std::vector<double>& stats, const std::string& what) {
  const std::vector<at::Tensor> params = trainable_parameters(net);
  const std::vector<at::Tensor> bn = running_statistics(net);
  int64_t total = static_cast<int64_t>(params.size()) + static_cast<int64_t>(stats.size());
  for (const auto& p : params) total += p.numel();
  for (const auto& t : bn) total += t.numel();
  at::Tensor buf = at::zeros({total}, at::kFloat);
  int64_t off = 0;
  for (const auto& p : params) {  // gradients (zeros where this rank has none)
    if (p.grad().defined()) buf.narrow(0, off, p.numel()).copy_(p.grad().reshape({-1}));
    off += p.numel();
  }
  float* flags = buf.data_ptr<float>() + off;  // 1 where this rank has a gradient
  for (size_t i = 0; i < params.size(); ++i) flags[i] = params[i].grad().defined() ? 1.0f : 0.0f;
  off += static_cast<int64_t>(params.size());
  for (const auto& t : bn) {
    buf.narrow(0, off, t.numel()).copy_(t.reshape({-1}) * share);
    off += t.numel();
  }
  for (size_t i = 0; i < stats.size(); ++i) buf[off + static_cast<int64_t>(i)] = stats[i];

  pg.allreduce_sum(buf, what);

  at::NoGradGuard ng;
  off = 0;
  const float* summed_flags = buf.data_ptr<float>();
  int64_t flag_off = 0;
  for (const auto& p : params) flag_off += p.numel();
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor p = params[i];
    const at::Tensor g = buf.narrow(0, off, p.numel()).view(p.sizes());
    off += p.numel();
    if (summed_flags[flag_off + static_cast<int64_t>(i)] == 0.0f) continue;  // no rank has one
    if (p.grad().defined()) p.mutable_grad().copy_(g);
    else p.mutable_grad() = g.clone();
  }
  off += static_cast<int64_t>(params.size());
  for (const auto& t : bn) {
    at::Tensor dst = t;
    dst.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
    off += t.numel();
  }
  for (size_t i = 0; i < stats.size(); ++i) stats[i] = buf[off + static_cast<int64_t>(i)].item<double>();
}

}  // namespace bbits::train
