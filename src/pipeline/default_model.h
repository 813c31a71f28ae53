#pragma once
// The embedded default model: a tiny SD + ControlNet trained by this project,
// shipped in models/default so that `controlnet generate` works with no download.
#include <string>

namespace cn {

// The default model's folder; throws cn::Error saying how to get a model when absent.
std::string default_model_dir();

}  // namespace cn
