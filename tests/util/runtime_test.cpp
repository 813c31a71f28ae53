#include <dlfcn.h>
#include <gtest/gtest.h>

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
