// `controlnet info FILE`: what a weight file holds.
#include <iostream>

#include "commands.h"
#include "io/safetensors.h"

namespace cn::cli {

void add_info_command(CLI::App& app) {
  static std::string path;
  auto* cmd = add_command(app, "info", "Describe a weight file: format, family, dtype, parameters, metadata", [] {
    auto file = io::SafetensorsFile::open(path);
    int64_t params = 0;
    for (const auto& r : file->records()) {
      int64_t n = 1;
      for (auto d : r.shape) n *= d;
      params += n;
    }
    std::cout << "file:       " << path << "\n"
              << "format:     safetensors\n"
              << "tensors:    " << file->records().size() << "\n"
              << "parameters: " << params << "\n";
    for (const auto& [k, v] : file->metadata()) std::cout << "metadata:   " << k << " = " << v << "\n";
    return 0;
  });
  cmd->add_option("file", path, "Checkpoint file or diffusers folder")->required();
}

}  // namespace cn::cli
