#include "util/paths.h"

#include <cstdlib>

namespace cn::util {

std::string models_dir() {
  if (const char* env = std::getenv("CONTROLNET_MODELS_DIR"); env && *env) return env;
  return CONTROLNET_MODELS_DIR;
}

}  // namespace cn::util
