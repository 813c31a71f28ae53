#pragma once
// The losses a training run wrote to <output>/loss.csv (step,loss,seconds).
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace cn::testing {

inline std::vector<double> losses(const std::filesystem::path& run_dir) {
  std::ifstream in(run_dir / "loss.csv");
  std::vector<double> out;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) out.push_back(std::stod(line.substr(line.find(',') + 1)));
  return out;
}

}  // namespace cn::testing
