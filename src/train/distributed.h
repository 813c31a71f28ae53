#pragma once
// Data-parallel training across processes with LibTorch's c10d process groups
// (Gloo on CPU; NCCL when LibTorch was built with it and CUDA is present).
// Ranks meet at a TCP store on MASTER_ADDR:MASTER_PORT, as torchrun arranges.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace cn::train {

class ProcessGroup {
 public:
  // RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT as torchrun sets them (and as
  // `--nproc` sets them for its workers); null when WORLD_SIZE is unset or 1.
  static std::shared_ptr<ProcessGroup> from_environment();
  // Rank 0 of a run on this machine: opens the store on a free port of
  // 127.0.0.1, calls `start_workers(port)` to launch ranks 1..world_size-1,
  // then waits for them to join.
  static std::shared_ptr<ProcessGroup> host_local(int world_size, const std::function<void(uint16_t port)>& start_workers);
  ~ProcessGroup();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // In place: the mean over ranks of each tensor (all on one device and dtype).
  void average(const std::vector<torch::Tensor>& tensors);
  // In place: rank `root`'s values everywhere.
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  // In place: the element-wise maximum over ranks.
  void max(const torch::Tensor& tensor);

 private:
  struct Backend;
  ProcessGroup(int rank, int size, std::unique_ptr<Backend> backend);
  int rank_, size_;
  std::unique_ptr<Backend> backend_;
};

// Workers of a `--nproc N` run: N-1 copies of this program with the same
// arguments, each told its rank through the environment. Their stderr is
// forwarded line by line with a "[rank k] " prefix. If one fails, the others
// are stopped and its last message is the run's error: failure() returns it;
// when rank 0 is stuck waiting for the failed rank and does not ask within a
// grace period, the process reports it and exits.
class LocalWorkers {
 public:
  LocalWorkers(int world_size, uint16_t port);
  ~LocalWorkers();  // stops workers still running
  // The first failed worker's message, waiting up to `grace` for one to be
  // known (rank 0's own error is often the consequence of a worker's).
  std::string failure(std::chrono::milliseconds grace);
  // Waits for every worker; throws Error with the first failure's message.
  void join();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace cn::train
