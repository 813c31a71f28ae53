#include "preprocess/numpy_random.h"

namespace cn::preprocess {

double NumpyRandomState::random_sample() {
  const uint32_t a = engine_() >> 5;
  const uint32_t b = engine_() >> 6;
  return (double(a) * 67108864.0 + double(b)) / 9007199254740992.0;
}

std::vector<double> NumpyRandomState::uniform(double low, double high, size_t count) {
  std::vector<double> values(count);
  for (auto& v : values) v = low + (high - low) * random_sample();
  return values;
}

}  // namespace cn::preprocess
