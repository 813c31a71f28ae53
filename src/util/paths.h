#pragma once
#include <string>

namespace cn::util {

// Folder of the data shipped with controlnet.cpp (default model, tokenizer):
// $CONTROLNET_MODELS_DIR, else the source tree's models/.
std::string models_dir();

}  // namespace cn::util
