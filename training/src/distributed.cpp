// Torch-free parts of distributed training: options, shards, fingerprints,
// and the local launcher behind --nproc.
#include "bbits/training/distributed.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace bbits::train {

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

namespace {

int parse_int(const std::string& s, const std::string& what) {
  size_t pos = 0;
  long v = 0;
  try {
    v = std::stol(s, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (s.empty() || pos != s.size() || v < -1000000000L || v > 1000000000L)
    throw std::invalid_argument(what + " must be a whole number, not '" + s + "'");
  return static_cast<int>(v);
}

}  // namespace

DistConfig resolve_dist_config(const DistOptions& cli, const EnvLookup& env) {
  DistConfig c;
  std::string ws_src = "--world-size", rank_src = "--rank", port_src = "--master-port", addr_src = "--master-addr";
  if (cli.world_size) {
    c.world_size = *cli.world_size;
  } else if (auto v = env("WORLD_SIZE")) {
    ws_src = "WORLD_SIZE";
    c.world_size = parse_int(*v, ws_src);
  }
  if (cli.rank) {
    c.rank = *cli.rank;
  } else if (auto v = env("RANK")) {
    rank_src = "RANK";
    c.rank = parse_int(*v, rank_src);
  }
  if (cli.master_addr) {
    c.master_addr = *cli.master_addr;
  } else if (auto v = env("MASTER_ADDR")) {
    addr_src = "MASTER_ADDR";
    c.master_addr = *v;
  }
  if (cli.master_port) {
    c.master_port = *cli.master_port;
  } else if (auto v = env("MASTER_PORT")) {
    port_src = "MASTER_PORT";
    c.master_port = parse_int(*v, port_src);
  }
  c.timeout_s = cli.timeout_s;
  if (c.world_size < 1) throw std::invalid_argument(ws_src + " must be >= 1, not " + std::to_string(c.world_size));
  if (c.rank < 0 || c.rank >= c.world_size)
    throw std::invalid_argument(rank_src + " must be in [0, " + std::to_string(c.world_size) + ") for world size " +
                                std::to_string(c.world_size) + ", not " + std::to_string(c.rank));
  if (c.master_port < 1 || c.master_port > 65535)
    throw std::invalid_argument(port_src + " must be in 1..65535, not " + std::to_string(c.master_port));
  if (c.master_addr.empty()) throw std::invalid_argument(addr_src + " must not be empty");
  if (!(c.timeout_s > 0) || c.timeout_s > 1e7)
    throw std::invalid_argument("--dist-timeout must be > 0 seconds (and at most 1e7)");
  return c;
}

Shard shard_of(int64_t n, int world_size, int rank) {
  if (world_size < 1 || rank < 0 || rank >= world_size || n < 0)
    throw std::invalid_argument("shard_of: need n >= 0 and 0 <= rank < world_size");
  return {n * rank / world_size, n * (rank + 1) / world_size};
}

uint64_t file_fingerprint(const std::string& path) {
  if (!std::filesystem::exists(path)) return 0;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read '" + path + "'");
  uint64_t h = 14695981039346656037ull;
  char buf[1 << 16];
  while (f) {
    f.read(buf, sizeof buf);
    const std::streamsize n = f.gcount();
    for (std::streamsize i = 0; i < n; ++i) {
      h ^= static_cast<unsigned char>(buf[i]);
      h *= 1099511628211ull;
    }
  }
  if (f.bad()) throw std::runtime_error("cannot read '" + path + "'");
  return h;
}

int free_tcp_port(const std::string& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("free_tcp_port: socket: ") + std::strerror(errno));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = 0;
  if (::inet_pton(AF_INET, addr.c_str(), &sa.sin_addr) != 1) {
    ::close(fd);
    throw std::invalid_argument("free_tcp_port: '" + addr + "' is not an IPv4 address");
  }
  socklen_t len = sizeof sa;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    const std::string msg = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("free_tcp_port: cannot bind " + addr + ": " + msg);
  }
  ::close(fd);
  return ntohs(sa.sin_port);
}

std::string self_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find this program's executable (/proc/self/exe): " + ec.message());
  return p.string();
}

// ---- the local launcher ------------------------------------------------------
namespace {

volatile sig_atomic_t g_launcher_signal = 0;
extern "C" void launcher_on_signal(int sig) { g_launcher_signal = sig; }

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int s = WTERMSIG(status);
    const char* name = strsignal(s);
    return "was killed by signal " + std::to_string(s) + (name ? std::string(" (") + name + ")" : std::string());
  }
  return "stopped (status " + std::to_string(status) + ")";
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int launch_local_ranks(int nproc, const std::string& program, const std::vector<std::string>& args,
                       const DistConfig& world, double grace_s, std::ostream& err) {
  if (nproc < 1) throw std::invalid_argument("--nproc must be >= 1");
  // The environment of every rank: ours, with the rendezvous variables replaced.
  std::map<std::string, std::string> over = {{"WORLD_SIZE", std::to_string(nproc)},
                                             {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
                                             {"MASTER_ADDR", world.master_addr},
                                             {"MASTER_PORT", std::to_string(world.master_port)}};
  std::vector<std::string> base_env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (over.count(key) || key == "RANK" || key == "LOCAL_RANK") continue;
    base_env.push_back(kv);
  }
  for (const auto& [k, v] : over) base_env.push_back(k + "=" + v);

  struct sigaction sa{}, old_int{}, old_term{};
  sa.sa_handler = launcher_on_signal;
  sigemptyset(&sa.sa_mask);
  g_launcher_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  struct Restore {
    struct sigaction i, t;
    ~Restore() {
      sigaction(SIGINT, &i, nullptr);
      sigaction(SIGTERM, &t, nullptr);
    }
  } restore{old_int, old_term};

  std::map<pid_t, int> alive;  // pid -> rank
  auto signal_all = [&](int sig) {
    for (const auto& [pid, r] : alive) ::kill(pid, sig);
  };
  auto reap_all = [&] {
    for (const auto& [pid, r] : alive) {
      int st = 0;
      ::waitpid(pid, &st, 0);
    }
    alive.clear();
  };

  std::vector<std::string> argv_s;
  argv_s.push_back(program);
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env_s = base_env;
    env_s.push_back("RANK=" + std::to_string(r));
    env_s.push_back("LOCAL_RANK=" + std::to_string(r));
    std::vector<char*> envp;
    for (auto& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) {
      signal_all(SIGTERM);
      reap_all();
      throw std::runtime_error("--nproc: cannot start rank " + std::to_string(r) + " ('" + program +
                               "'): " + std::strerror(rc));
    }
    alive[pid] = r;
  }

  using Clock = std::chrono::steady_clock;
  int first_code = 0;
  bool failed = false, termed = false, killed = false;
  Clock::time_point term_at{}, kill_at{};
  while (!alive.empty()) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      auto it = alive.find(pid);
      if (it == alive.end()) continue;
      const int r = it->second;
      alive.erase(it);
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (ok) continue;
      if (termed) {
        err << "bbits-train --nproc: rank " << r << " (pid " << pid << ") stopped by the launcher ("
            << describe_status(status) << ")\n";
      } else {
        err << "bbits-train --nproc: rank " << r << " (pid " << pid << ") " << describe_status(status) << "\n";
      }
      if (!failed) {
        failed = true;
        first_code = exit_code_of(status);
        term_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
      }
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (g_launcher_signal != 0) {
      const int sig = g_launcher_signal;
      g_launcher_signal = 0;
      signal_all(sig);
      if (!failed) {
        failed = true;
        first_code = 128 + sig;
        term_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
      }
    }
    const auto now = Clock::now();
    if (failed && !termed && now >= term_at && !alive.empty()) {
      err << "bbits-train --nproc: stopping the remaining rank(s) with SIGTERM\n";
      signal_all(SIGTERM);
      termed = true;
      kill_at = now + std::chrono::seconds(5);
    }
    if (termed && !killed && now >= kill_at && !alive.empty()) {
      signal_all(SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return first_code;
}

}  // namespace bbits::train
