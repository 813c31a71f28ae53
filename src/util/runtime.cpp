#include "controlnet/runtime.h"

#include <malloc.h>
#include <torch/torch.h>

namespace cn {

void init_runtime(int threads) {
  static const bool malloc_tuned = [] {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)malloc_tuned;
  if (threads > 0) torch::set_num_threads(threads);
}

}  // namespace cn
