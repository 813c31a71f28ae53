#include "train/distributed.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "controlnet/error.h"

extern char** environ;

namespace cn::train {
namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (!value || !*value) return fallback;
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  if (*end || v < 0) throw Error(std::string("distributed: ") + name + "=" + value + " is not a non-negative integer");
  return int(v);
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

// Tensors per collective call are packed into flat buffers of at most this
// many elements: one call per bucket instead of one per parameter, without
// a second copy of all gradients (SD1.5's ControlNet has 361 M parameters).
constexpr int64_t kBucketElements = int64_t(1) << 24;

}  // namespace

struct ProcessGroup::Backend {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;

  void connect(const std::string& address, int rank, int size) {
#ifdef USE_C10D_NCCL
    if (torch::cuda::is_available()) {
      group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size);
      return;
    }
#endif
    auto options = c10d::ProcessGroupGloo::Options::create();
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    else if (is_loopback(address))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  }

  // Runs `collective` on flat buckets of `tensors`, copying results back.
  void bucketed(const std::vector<torch::Tensor>& tensors,
                const std::function<void(std::vector<torch::Tensor>&)>& collective) {
    torch::NoGradGuard no_grad;  // results land in parameters and gradients in place
    size_t begin = 0;
    while (begin < tensors.size()) {
      size_t end = begin;
      int64_t elements = 0;
      while (end < tensors.size() && (end == begin || elements + tensors[end].numel() <= kBucketElements))
        elements += tensors[end++].numel();
      std::vector<torch::Tensor> flat_parts;
      for (size_t i = begin; i < end; ++i) flat_parts.push_back(tensors[i].reshape(-1));
      std::vector<torch::Tensor> buffer{torch::cat(flat_parts)};
      collective(buffer);
      int64_t offset = 0;
      for (size_t i = begin; i < end; ++i) {
        const int64_t n = tensors[i].numel();
        tensors[i].copy_(buffer[0].narrow(0, offset, n).view_as(tensors[i]));
        offset += n;
      }
      begin = end;
    }
  }
};

ProcessGroup::ProcessGroup(int rank, int size, std::unique_ptr<Backend> backend)
    : rank_(rank), size_(size), backend_(std::move(backend)) {}

ProcessGroup::~ProcessGroup() = default;

std::shared_ptr<ProcessGroup> ProcessGroup::from_environment() {
  const int size = env_int("WORLD_SIZE", 1);
  if (size <= 1) return nullptr;
  const int rank = env_int("RANK", -1);
  if (rank < 0 || rank >= size)
    throw Error("distributed: WORLD_SIZE=" + std::to_string(size) + " needs RANK in 0.." + std::to_string(size - 1));
  const char* address = std::getenv("MASTER_ADDR");
  const int port = env_int("MASTER_PORT", -1);
  if (!address || !*address || port <= 0 || port > 65535)
    throw Error("distributed: WORLD_SIZE=" + std::to_string(size) + " needs MASTER_ADDR and MASTER_PORT");
  c10d::TCPStoreOptions options;
  options.port = uint16_t(port);
  options.isServer = rank == 0;
  options.numWorkers = size;
  options.waitWorkers = false;
  auto backend = std::make_unique<Backend>();
  try {
    backend->store = c10::make_intrusive<c10d::TCPStore>(address, options);
    backend->connect(address, rank, size);
  } catch (const c10::Error& e) {
    throw Error("distributed: rank " + std::to_string(rank) + " cannot join " + address + ":" + std::to_string(port) +
                ": " + e.what_without_backtrace());
  }
  return std::shared_ptr<ProcessGroup>(new ProcessGroup(rank, size, std::move(backend)));
}

std::shared_ptr<ProcessGroup> ProcessGroup::host_local(int world_size,
                                                       const std::function<void(uint16_t port)>& start_workers) {
  c10d::TCPStoreOptions options;
  options.port = 0;  // the kernel picks a free one; the workers are told which
  options.isServer = true;
  options.numWorkers = world_size;
  options.waitWorkers = false;
  auto backend = std::make_unique<Backend>();
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
  start_workers(store->getPort());
  backend->store = store;
  try {
    backend->connect("127.0.0.1", 0, world_size);
  } catch (const c10::Error& e) {
    throw Error(std::string("distributed: the workers did not join: ") + e.what_without_backtrace());
  }
  return std::shared_ptr<ProcessGroup>(new ProcessGroup(0, world_size, std::move(backend)));
}

void ProcessGroup::average(const std::vector<torch::Tensor>& tensors) {
  backend_->bucketed(tensors, [&](std::vector<torch::Tensor>& buffer) {
    backend_->group->allreduce(buffer, {c10d::ReduceOp::SUM})->wait();
    buffer[0].div_(size_);
  });
}

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  c10d::BroadcastOptions options;
  options.rootRank = root;
  backend_->bucketed(tensors, [&](std::vector<torch::Tensor>& buffer) { backend_->group->broadcast(buffer, options)->wait(); });
}

void ProcessGroup::max(const torch::Tensor& tensor) {
  std::vector<torch::Tensor> buffer{tensor};
  backend_->group->allreduce(buffer, {c10d::ReduceOp::MAX})->wait();
}

// ---------------------------------------------------------------------------

struct LocalWorkers::State {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<pid_t> pids;
  std::vector<bool> running;
  std::vector<std::thread> readers;
  std::thread watchdog;
  std::string failure;
  bool stopping = false;  // rank 0 stops the workers itself: their deaths are not failures
  bool handled = false;   // rank 0 has asked for the failure: no need for the watchdog

  void stop_others_locked() {
    for (size_t i = 0; i < pids.size(); ++i)
      if (running[i]) kill(pids[i], SIGTERM);
  }
};

namespace {

std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
  return args;
}

std::string own_executable() {
  std::vector<char> path(4096);
  const ssize_t n = readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (n <= 0) throw Error("--nproc: cannot find this program's path (/proc/self/exe)");
  return std::string(path.data(), size_t(n));
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  return "stopped";
}

}  // namespace

LocalWorkers::LocalWorkers(int world_size, uint16_t port) : state_(std::make_shared<State>()) {
  const auto executable = own_executable();
  const auto args = own_arguments();
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const auto name = entry.substr(0, entry.find('='));
    if (name != "RANK" && name != "LOCAL_RANK" && name != "WORLD_SIZE" && name != "LOCAL_WORLD_SIZE" &&
        name != "MASTER_ADDR" && name != "MASTER_PORT")
      base_env.push_back(entry);
  }
  base_env.push_back("WORLD_SIZE=" + std::to_string(world_size));
  base_env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(world_size));
  base_env.push_back("MASTER_ADDR=127.0.0.1");
  base_env.push_back("MASTER_PORT=" + std::to_string(port));
  const pid_t parent = getpid();
  for (int rank = 1; rank < world_size; ++rank) {
    auto env = base_env;
    env.push_back("RANK=" + std::to_string(rank));
    env.push_back("LOCAL_RANK=" + std::to_string(rank));
    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw Error("--nproc: cannot create a pipe for worker " + std::to_string(rank));
    const pid_t pid = fork();
    if (pid < 0) throw Error("--nproc: cannot start worker " + std::to_string(rank));
    if (pid == 0) {
      // Only async-signal-safe calls until exec. A worker dies with rank 0.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      dup2(pipe_fds[1], STDERR_FILENO);
      execve(executable.c_str(), argv.data(), envp.data());
      static const char message[] = "error: cannot run this program again for a worker\n";
      (void)!write(STDERR_FILENO, message, sizeof message - 1);
      _exit(127);
    }
    close(pipe_fds[1]);
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->pids.push_back(pid);
    state_->running.push_back(true);
    const size_t index = state_->pids.size() - 1;
    state_->readers.emplace_back([state = state_, fd = pipe_fds[0], pid, rank, index] {
      // Forward the worker's stderr; its last line is its error message.
      std::string pending, last, last_error;
      char chunk[4096];
      auto emit = [&](const std::string& line) {
        const std::string prefixed = "[rank " + std::to_string(rank) + "] " + line + "\n";
        (void)!write(STDERR_FILENO, prefixed.data(), prefixed.size());
        if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
        for (const char* prefix : {"error: ", "internal error: "})
          if (line.rfind(prefix, 0) == 0) last_error = line.substr(std::strlen(prefix));
      };
      for (ssize_t n; (n = read(fd, chunk, sizeof chunk)) != 0;) {
        if (n < 0) {
          if (errno == EINTR) continue;
          break;
        }
        pending.append(chunk, size_t(n));
        for (size_t eol; (eol = pending.find_first_of("\n\r")) != std::string::npos; pending.erase(0, eol + 1))
          if (eol > 0) emit(pending.substr(0, eol));
      }
      if (!pending.empty()) emit(pending);
      close(fd);
      int status = 0;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      std::lock_guard<std::mutex> lock(state->mutex);
      state->running[index] = false;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok && !state->stopping && state->failure.empty()) {
        // Its error line (a LibTorch error is followed by a backtrace), else its last line.
        const auto& message = last_error.empty() ? last : last_error;
        state->failure =
            "worker rank " + std::to_string(rank) + " " + describe_exit(status) + (message.empty() ? "" : ": " + message);
        state->stop_others_locked();
        // Rank 0 may be blocked on the failed rank (e.g. at the rendezvous).
        state->watchdog = std::thread([state] {
          std::unique_lock<std::mutex> lock(state->mutex);
          if (state->changed.wait_for(lock, std::chrono::seconds(20), [&] { return state->handled; })) return;
          const std::string message = "error: " + state->failure + "\n";
          (void)!write(STDERR_FILENO, message.data(), message.size());
          _exit(2);
        });
      }
      state->changed.notify_all();
    });
  }
}

std::string LocalWorkers::failure(std::chrono::milliseconds grace) {
  std::unique_lock<std::mutex> lock(state_->mutex);
  state_->handled = true;
  state_->changed.notify_all();
  state_->changed.wait_for(lock, grace, [&] {
    return !state_->failure.empty() ||
           std::none_of(state_->running.begin(), state_->running.end(), [](bool r) { return r; });
  });
  return state_->failure;
}

void LocalWorkers::join() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->handled = true;
    state_->changed.notify_all();
  }
  for (auto& reader : state_->readers)
    if (reader.joinable()) reader.join();
  if (state_->watchdog.joinable()) state_->watchdog.join();
  if (!state_->failure.empty()) throw Error(state_->failure);
}

LocalWorkers::~LocalWorkers() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->handled = true;
    if (state_->failure.empty()) state_->stopping = true;
    state_->stop_others_locked();
    state_->changed.notify_all();
  }
  for (auto& reader : state_->readers)
    if (reader.joinable()) reader.join();
  if (state_->watchdog.joinable()) state_->watchdog.join();
}

}  // namespace cn::train
