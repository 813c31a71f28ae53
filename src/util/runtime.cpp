#include "controlnet/runtime.h"

#include <malloc.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

namespace cn {

int physical_cores() {
  // Each physical core lists its hardware threads once in thread_siblings_list.
  std::set<std::string> cores;
  for (unsigned cpu = 0;; ++cpu) {
    std::ifstream in("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
    if (!in) break;
    std::string siblings;
    std::getline(in, siblings);
    cores.insert(siblings);
  }
  if (!cores.empty()) return static_cast<int>(cores.size());
  return std::max(1u, std::thread::hardware_concurrency());
}

void init_runtime(int threads) {
  static const bool malloc_tuned = [] {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)malloc_tuned;
  // LibTorch's OpenMP default can be a single thread (it is on Debian's build
  // here), so the thread count is always set explicitly.
  torch::set_num_threads(threads > 0 ? threads : physical_cores());
}

}  // namespace cn
