#include "pipeline/default_model.h"

#include <filesystem>

#include "controlnet/error.h"
#include "util/paths.h"

namespace cn {

std::string default_model_dir() {
  auto dir = std::filesystem::path(util::models_dir()) / "default";
  if (!std::filesystem::exists(dir / "model_index.json"))
    throw Error("no --model given and the embedded default model is missing (" + dir.string() +
                "); pass -m with an SD 1.x/2.x checkpoint or diffusers folder");
  return dir.string();
}

}  // namespace cn
