#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "controlnet/runtime.h"

namespace fs = std::filesystem;

// ctest runs test processes side by side, and the tests name their scratch
// files after themselves (temp_directory_path() / "cn_cli_error.png"), so each
// process gets a temp folder of its own: TMPDIR points into it, which the
// tests and the CLI runs they spawn both honour. It is removed when all tests
// pass and kept, with its path printed, when one fails.
int main(int argc, char** argv) {
  cn::init_runtime();
  ::testing::InitGoogleTest(&argc, argv);
  const fs::path scratch = fs::temp_directory_path() / ("controlnet-test-" + std::to_string(::getpid()));
  fs::create_directories(scratch);
  ::setenv("TMPDIR", scratch.c_str(), 1);
  const int failed = RUN_ALL_TESTS();
  if (failed)
    std::cerr << "scratch files kept in " << scratch << "\n";
  else
    fs::remove_all(scratch);
  return failed;
}
