#include "sampling/samplers.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <deque>

namespace cn::sampling {
namespace {

// alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t: the VP process at a noise level.
struct AlphaSigma {
  double alpha, sigma;
  explicit AlphaSigma(double s) : alpha(1.0 / std::sqrt(s * s + 1.0)), sigma(s * alpha) {}
  double lambda() const { return std::log(alpha) - std::log(sigma); }
};

// x0 from the model output of a VP state x = alpha x0 + sigma eps.
torch::Tensor predict_x0(const torch::Tensor& out, const torch::Tensor& x, double alpha, double sigma, bool v) {
  return v ? alpha * x - sigma * out : (x - sigma * out) / alpha;
}

// x0 from the model output of a k-diffusion state x = x0 + sigma eps.
torch::Tensor predict_x0_sigma(const torch::Tensor& out, const torch::Tensor& x, double sigma, bool v) {
  if (!v) return x - sigma * out;
  return out * (-sigma / std::sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1);
}

struct Loop {
  const Model& model;
  const Plan& plan;
  const NoiseSchedule& schedule;
  const NoiseSource& noise;
  const StepCallback& on_step;

  torch::Tensor eval(const torch::Tensor& x, int64_t i) const {
    const double scale = plan.input_scale(i);
    auto input = scale == 1.0 ? x : x * scale;
    return model(input, plan.timesteps[i], i).to(torch::kFloat);
  }
  void done(int64_t i, const torch::Tensor& x) const {
    if (on_step) on_step(i, x);
  }
  double alpha_at(int64_t t) const { return t >= 0 ? schedule.alpha_cumprod(t) : final_alpha(); }
  double final_alpha() const { return schedule.set_alpha_to_one ? 1.0 : schedule.alpha_cumprod(0); }
  int64_t step_ratio() const { return schedule.train_steps / plan.inference_steps; }
};

torch::Tensor ddim(const Loop& L, torch::Tensor x, double eta) {
  const bool v = L.schedule.v_prediction();
  for (int64_t i = L.plan.start; i < L.plan.loop_iterations(); ++i) {
    const int64_t t = L.plan.timesteps[i].item<int64_t>();
    auto out = L.eval(x, i);
    const double a = L.alpha_at(t), a_prev = L.alpha_at(t - L.step_ratio());
    auto x0 = predict_x0(out, x, std::sqrt(a), std::sqrt(1 - a), v);
    auto eps = v ? std::sqrt(a) * out + std::sqrt(1 - a) * x : out;
    const double variance = (1 - a_prev) / (1 - a) * (1 - a / a_prev);
    const double std_dev = eta * std::sqrt(variance);
    x = std::sqrt(a_prev) * x0 + std::sqrt(1 - a_prev - std_dev * std_dev) * eps;
    if (std_dev > 0) x = x + std_dev * L.noise(i, x.sizes());
    L.done(i, x);
  }
  return x;
}

// PLMS (PNDM without Runge-Kutta warm-up): linear multistep on epsilon with
// the pseudo-numerical transfer of PNDM. The second iteration revisits the
// first interval with the average of the first two outputs.
torch::Tensor pndm(const Loop& L, torch::Tensor x) {
  const bool v = L.schedule.v_prediction();
  std::deque<torch::Tensor> ets;
  torch::Tensor first_sample;
  for (int64_t i = L.plan.start, counter = 0; i < L.plan.loop_iterations(); ++i, ++counter) {
    int64_t t = L.plan.timesteps[i].item<int64_t>();
    auto out = L.eval(x, i);
    if (v) {  // PNDM's transfer works on epsilon
      const double a = L.alpha_at(t);
      out = std::sqrt(a) * out + std::sqrt(1 - a) * x;
    }
    int64_t prev_t = t - L.step_ratio();
    torch::Tensor e, from = x;
    if (counter == 1) {
      prev_t = t;
      t = t + L.step_ratio();
      e = (out + ets.back()) / 2;
      from = first_sample;
    } else {
      if (ets.size() == 4) ets.pop_front();
      ets.push_back(out);
      const auto n = ets.size();
      if (n == 1) {
        e = out;
        first_sample = x;
      } else if (n == 2) {
        e = (3 * ets[1] - ets[0]) / 2;
      } else if (n == 3) {
        e = (23 * ets[2] - 16 * ets[1] + 5 * ets[0]) / 12;
      } else {
        e = (55 * ets[3] - 59 * ets[2] + 37 * ets[1] - 9 * ets[0]) / 24;
      }
    }
    const double a = L.alpha_at(t), a_prev = L.alpha_at(prev_t);
    const double sample_coeff = std::sqrt(a_prev / a);
    const double denom = a * std::sqrt(1 - a_prev) + std::sqrt(a * (1 - a) * a_prev);
    x = sample_coeff * from - (a_prev - a) * e / denom;
    L.done(i, x);
  }
  return x;
}

// Euler, Euler ancestral and LMS share the k-diffusion state x = x0 + sigma eps.
torch::Tensor euler(const Loop& L, torch::Tensor x, bool ancestral) {
  const bool v = L.schedule.v_prediction();
  for (int64_t i = L.plan.start; i < L.plan.loop_iterations(); ++i) {
    const double sigma = L.plan.sigmas[i], next = L.plan.sigmas[i + 1];
    auto x0 = predict_x0_sigma(L.eval(x, i), x, sigma, v);
    auto derivative = (x - x0) / sigma;
    if (!ancestral) {
      x = x + derivative * (next - sigma);
    } else {
      const double up = std::sqrt(next * next * (sigma * sigma - next * next) / (sigma * sigma));
      const double down = std::sqrt(next * next - up * up);
      x = x + derivative * (down - sigma);
      x = x + L.noise(i, x.sizes()) * up;
    }
    L.done(i, x);
  }
  return x;
}

// Coefficient of the derivative `j` steps back in the order-`order` linear
// multistep update from sigma_i to sigma_{i+1}: the integral of its Lagrange
// basis polynomial (degree < 4), exact with 4-point Gauss-Legendre.
double lms_coefficient(const std::vector<double>& sigmas, int64_t i, int64_t order, int64_t j) {
  auto basis = [&](double tau) {
    double prod = 1.0;
    for (int64_t k = 0; k < order; ++k)
      if (k != j) prod *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k]);
    return prod;
  };
  static const double nodes[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
  static const double weights[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
  const double a = sigmas[i], b = sigmas[i + 1], half = (b - a) / 2, mid = (a + b) / 2;
  double sum = 0;
  for (int q = 0; q < 4; ++q) sum += weights[q] * basis(mid + half * nodes[q]);
  return sum * half;
}

torch::Tensor lms(const Loop& L, torch::Tensor x) {
  const bool v = L.schedule.v_prediction();
  const int64_t max_order = 4;
  std::deque<torch::Tensor> derivatives;
  for (int64_t i = L.plan.start; i < L.plan.loop_iterations(); ++i) {
    const double sigma = L.plan.sigmas[i];
    auto x0 = predict_x0_sigma(L.eval(x, i), x, sigma, v);
    derivatives.push_back((x - x0) / sigma);
    if (int64_t(derivatives.size()) > max_order) derivatives.pop_front();
    const int64_t order = std::min<int64_t>(i - L.plan.start + 1, max_order);
    auto update = torch::zeros_like(x);
    for (int64_t j = 0; j < order; ++j)
      update = update + lms_coefficient(L.plan.sigmas, i, order, j) * derivatives[derivatives.size() - 1 - j];
    x = x + update;
    L.done(i, x);
  }
  return x;
}

// DPM-Solver++(2M), midpoint form, in data (x0) prediction.
torch::Tensor dpmpp_2m(const Loop& L, torch::Tensor x) {
  const bool v = L.schedule.v_prediction();
  const int64_t n = L.plan.loop_iterations();
  torch::Tensor previous_x0;
  for (int64_t i = L.plan.start; i < n; ++i) {
    const AlphaSigma s0(L.plan.sigmas[i]), t(L.plan.sigmas[i + 1]);
    auto x0 = predict_x0(L.eval(x, i), x, s0.alpha, s0.sigma, v);
    // lambda_t is +inf at sigma 0: exp(-h) = 0 and the step lands on x0.
    const double h = t.lambda() - s0.lambda();
    const double phi = std::expm1(-h);  // exp(-h) - 1
    // First order at the start and on the final step (it ends at sigma 0;
    // diffusers' lower_order_final with final_sigmas_type "zero").
    const bool first_order = !previous_x0.defined() || i == n - 1;
    x = (t.sigma / s0.sigma) * x - t.alpha * phi * x0;
    if (!first_order) {
      const AlphaSigma s1(L.plan.sigmas[i - 1]);
      const double r = (s0.lambda() - s1.lambda()) / h;
      x = x - 0.5 * t.alpha * phi * ((x0 - previous_x0) / r);
    }
    previous_x0 = x0;
    L.done(i, x);
  }
  return x;
}

// Solves the small dense system A c = b (Gaussian elimination with pivoting).
std::vector<double> solve(std::vector<std::vector<double>> A, std::vector<double> b) {
  const size_t n = b.size();
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r)
      if (std::abs(A[r][col]) > std::abs(A[pivot][col])) pivot = r;
    std::swap(A[col], A[pivot]);
    std::swap(b[col], b[pivot]);
    for (size_t r = col + 1; r < n; ++r) {
      const double f = A[r][col] / A[col][col];
      for (size_t c = col; c < n; ++c) A[r][c] -= f * A[col][c];
      b[r] -= f * b[col];
    }
  }
  std::vector<double> x(n);
  for (size_t r = n; r-- > 0;) {
    double sum = b[r];
    for (size_t c = r + 1; c < n; ++c) sum -= A[r][c] * x[c];
    x[r] = sum / A[r][r];
  }
  return x;
}

// UniPC (bh2, data prediction): a predictor from the stored x0 history and,
// from the second step on, a corrector that reuses the new model output.
struct UniPc {
  const Loop& L;
  std::vector<torch::Tensor> x0s;  // converted outputs, oldest first

  // The shared bh2 coefficients: for history ratios rks (ending with 1).
  struct Coefficients {
    std::vector<std::vector<double>> R;
    std::vector<double> b;
    double h_phi_1, B_h;
  };
  static Coefficients coefficients(double h, const std::vector<double>& rks) {
    Coefficients c;
    const double hh = -h;
    c.h_phi_1 = std::expm1(hh);
    c.B_h = std::expm1(hh);
    double h_phi_k = c.h_phi_1 / hh - 1, factorial = 1;
    const size_t order = rks.size();
    c.R.assign(order, std::vector<double>(order));
    for (size_t i = 1; i <= order; ++i) {
      for (size_t k = 0; k < order; ++k) c.R[i - 1][k] = std::pow(rks[k], double(i - 1));
      c.b.push_back(h_phi_k * factorial / c.B_h);
      factorial *= double(i + 1);
      h_phi_k = h_phi_k / hh - 1 / factorial;
    }
    return c;
  }

  // Differences of older x0s against m0, divided by their lambda ratios.
  void history(int64_t index_of_m0, int64_t order, double lambda0, double h, std::vector<double>& rks,
               std::vector<torch::Tensor>& d1s) const {
    const auto& m0 = x0s.back();
    for (int64_t k = 1; k < order; ++k) {
      const double lambda_k = AlphaSigma(L.plan.sigmas[index_of_m0 - k]).lambda();
      const double rk = (lambda_k - lambda0) / h;
      rks.push_back(rk);
      d1s.push_back((x0s[x0s.size() - 1 - k] - m0) / rk);
    }
    rks.push_back(1.0);
  }

  torch::Tensor predict(const torch::Tensor& x, int64_t i, int64_t order) const {
    const AlphaSigma s0(L.plan.sigmas[i]), t(L.plan.sigmas[i + 1]);
    const double h = t.lambda() - s0.lambda();
    std::vector<double> rks;
    std::vector<torch::Tensor> d1s;
    history(i, order, s0.lambda(), h, rks, d1s);
    const auto c = coefficients(h, rks);
    auto out = (t.sigma / s0.sigma) * x - t.alpha * c.h_phi_1 * x0s.back();
    if (!d1s.empty()) {
      // Order 2 uses rho = 0.5 (as the reference); higher orders solve the system.
      std::vector<double> rhos = {0.5};
      if (order > 2) {
        std::vector<std::vector<double>> A(order - 1, std::vector<double>(order - 1));
        for (int64_t r = 0; r < order - 1; ++r)
          for (int64_t k = 0; k < order - 1; ++k) A[r][k] = c.R[r][k];
        rhos = solve(A, std::vector<double>(c.b.begin(), c.b.end() - 1));
      }
      auto res = torch::zeros_like(x);
      for (size_t k = 0; k < d1s.size(); ++k) res = res + rhos[k] * d1s[k];
      out = out - t.alpha * c.B_h * res;
    }
    return out;
  }

  // Corrects the sample reached at iteration i (from `last` at i - 1) with the new x0.
  torch::Tensor correct(const torch::Tensor& x0_new, const torch::Tensor& last, int64_t i, int64_t order) const {
    const AlphaSigma s0(L.plan.sigmas[i - 1]), t(L.plan.sigmas[i]);
    const double h = t.lambda() - s0.lambda();
    std::vector<double> rks;
    std::vector<torch::Tensor> d1s;
    history(i - 1, order, s0.lambda(), h, rks, d1s);
    const auto c = coefficients(h, rks);
    const auto rhos = order == 1 ? std::vector<double>{0.5} : solve(c.R, c.b);
    auto out = (t.sigma / s0.sigma) * last - t.alpha * c.h_phi_1 * x0s.back();
    auto res = torch::zeros_like(last);
    for (size_t k = 0; k < d1s.size(); ++k) res = res + rhos[k] * d1s[k];
    return out - t.alpha * c.B_h * (res + rhos.back() * (x0_new - x0s.back()));
  }
};

torch::Tensor unipc(const Loop& L, torch::Tensor x) {
  const bool v = L.schedule.v_prediction();
  const int64_t n = L.plan.loop_iterations(), max_order = 2;
  UniPc u{L, {}};
  torch::Tensor last_sample;
  int64_t order = 0;
  for (int64_t i = L.plan.start; i < n; ++i) {
    const AlphaSigma s(L.plan.sigmas[i]);
    auto x0 = predict_x0(L.eval(x, i), x, s.alpha, s.sigma, v);
    if (last_sample.defined()) x = u.correct(x0, last_sample, i, order);
    u.x0s.push_back(x0);
    if (int64_t(u.x0s.size()) > max_order) u.x0s.erase(u.x0s.begin());
    // lower_order_final: the order never exceeds the steps left, nor the history.
    order = std::min({max_order, n - i, static_cast<int64_t>(u.x0s.size())});
    last_sample = x;
    x = u.predict(x, i, order);
    L.done(i, x);
  }
  return x;
}

}  // namespace

torch::Tensor sample(const Model& model, torch::Tensor x, const Plan& plan, const NoiseSchedule& schedule,
                     const NoiseSource& noise, const StepCallback& on_step, const SamplerOptions& options) {
  const Loop loop{model, plan, schedule, noise, on_step};
  x = x.to(torch::kFloat);
  switch (plan.sampler.kind) {
    case SamplerKind::ddim: return ddim(loop, x, options.eta);
    case SamplerKind::pndm: return pndm(loop, x);
    case SamplerKind::euler: return euler(loop, x, false);
    case SamplerKind::euler_ancestral: return euler(loop, x, true);
    case SamplerKind::lms: return lms(loop, x);
    case SamplerKind::dpmpp_2m: return dpmpp_2m(loop, x);
    case SamplerKind::unipc: return unipc(loop, x);
  }
  return x;
}

NoiseSource generator_noise(torch::Generator generator, torch::Device device) {
  return [generator, device](int64_t, at::IntArrayRef shape) mutable {
    return torch::randn(shape, generator, torch::dtype(torch::kFloat)).to(device);
  };
}

torch::Generator make_cpu_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace cn::sampling
