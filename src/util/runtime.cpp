#include "controlnet/runtime.h"

#include <dlfcn.h>
#include <malloc.h>
#include <torch/torch.h>

#include <cstdlib>
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

bool set_blas_threads(int threads) {
  // Looked up at run time: LibTorch may be linked to another BLAS (or none).
  using SetThreads = void (*)(int);
  static const auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set) set(threads);
  return set != nullptr;
}

bool prefer_avx512_kernels() {
#if defined(__x86_64__)
  // ATen picks its kernels' instruction set once, at the first dispatch,
  // from ATEN_CPU_CAPABILITY or else its own CPU detection. On this
  // machine's AMD EPYC (AVX-512 with bf16) Debian's LibTorch 1.13 detects
  // only AVX2; its AVX-512 kernels, compiled in, run softmax, exp and the
  // norms 1.5-2x faster: SD1.5 + ControlNet bf16 at 512, 7.47 -> 5.47 s per
  // step. The variable is set only where the CPU has what those kernels use
  // (ATen trusts it) and never over the user's own choice.
  if (std::getenv("ATEN_CPU_CAPABILITY")) return false;
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma")))
    return false;
  return setenv("ATEN_CPU_CAPABILITY", "avx512", 0) == 0;
#else
  return false;
#endif
}

void init_runtime(int threads) {
  static const bool avx512 = prefer_avx512_kernels();  // before any tensor work
  (void)avx512;
  static const bool malloc_tuned = [] {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)malloc_tuned;
  // LibTorch's OpenMP default can be a single thread (it is on Debian's build
  // here), so the thread count is always set explicitly.
  torch::set_num_threads(threads > 0 ? threads : physical_cores());
  // OpenBLAS (pthread build) keeps its own worker threads, which spin after
  // each call as LibTorch's OpenMP workers do after each parallel region; on
  // as many cores as threads each pool's spinning steals the cores the other
  // one is computing on. With BLAS on the calling thread, measured on 2 cores:
  // tiny-model training 0.79 -> 1.78 steps/s, an fp32 SD1.5 step at 256x256
  // 3.81 -> 2.76 s, although one large fp32 GEMM alone runs 35 % slower.
  set_blas_threads(1);
}

}  // namespace cn
