#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "controlnet/runtime.h"

namespace {

using GetThreads = int (*)();

GetThreads openblas_threads() {
  return reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
}

}  // namespace

// The test binaries start through init_runtime, as every program does.
TEST(Runtime, KeepsOpenBlasOnTheCallingThread) {
  const auto threads = openblas_threads();
  if (!threads) GTEST_SKIP() << "LibTorch's BLAS here is not OpenBLAS";
  EXPECT_EQ(threads(), 1);
  ASSERT_TRUE(cn::set_blas_threads(2));
  EXPECT_EQ(threads(), 2);
  cn::init_runtime();
  EXPECT_EQ(threads(), 1);
}

// On a CPU with AVX-512 the programs ask ATen for its AVX-512 kernels, unless
// the user chose an instruction set; a choice already made is never replaced.
TEST(Runtime, AsksAtenForAvx512WhereTheCpuHasIt) {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  if (!avx512) {
    EXPECT_FALSE(cn::prefer_avx512_kernels());
    GTEST_SKIP() << "this CPU has no AVX-512";
  }
  const char* chosen = std::getenv("ATEN_CPU_CAPABILITY");
  ASSERT_NE(chosen, nullptr) << "init_runtime left ATen to its own detection";
  const std::string before = chosen;
  EXPECT_FALSE(cn::prefer_avx512_kernels());
  EXPECT_EQ(std::getenv("ATEN_CPU_CAPABILITY"), before);
}
