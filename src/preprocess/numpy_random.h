#pragma once
// numpy's legacy global RandomState, as far as the annotators use it:
// np.random.seed(int) and np.random.uniform, drawing the same doubles.
#include <cstdint>
#include <random>
#include <vector>

namespace cn::preprocess {

class NumpyRandomState {
 public:
  // np.random.seed(seed) for an integer seed: MT19937 init_genrand(seed),
  // which is exactly what std::mt19937's seeding constructor does.
  explicit NumpyRandomState(uint32_t seed) : engine_(seed) {}

  // random_sample(): 53 random bits from two 32-bit outputs (a>>5, b>>6) / 2^53.
  double random_sample();

  // np.random.uniform(low, high, size=count) in C order: low + (high - low) * sample.
  std::vector<double> uniform(double low, double high, size_t count);

 private:
  std::mt19937 engine_;
};

}  // namespace cn::preprocess
