#include <gtest/gtest.h>

#include "controlnet/runtime.h"

int main(int argc, char** argv) {
  cn::init_runtime();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
