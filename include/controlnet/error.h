#pragma once
// The one exception type controlnet.cpp throws for bad input: files, options,
// images. Its message is complete and meant for the user as it is.
#include <stdexcept>
#include <string>

namespace cn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace cn
