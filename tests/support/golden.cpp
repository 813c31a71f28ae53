#include "support/golden.h"

#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>

namespace cn::testing {

GoldenCase::GoldenCase(fs::path dir) : dir_(std::move(dir)) {
  std::ifstream in(dir_ / "manifest.json");
  manifest_ = nlohmann::json::parse(in);
  data_ = io::SafetensorsFile::open((dir_ / manifest_.value("file", "data.safetensors")).string());
}

GoldenCase::GoldenCase(fs::path dir, nlohmann::json manifest, std::string name)
    : dir_(std::move(dir)), manifest_(std::move(manifest)), name_(std::move(name)) {
  data_ = io::SafetensorsFile::open((dir_ / manifest_.at("file").get<std::string>()).string());
}

std::string GoldenCase::name() const {
  return name_.empty() ? fs::relative(dir_, golden_root()).string() : name_;
}

bool GoldenCase::has(const std::string& tensor) const { return data_->contains(tensor); }

torch::Tensor GoldenCase::get(const std::string& tensor) const { return data_->tensor(tensor); }

double GoldenCase::atol(const std::string& tensor) const {
  const auto& t = manifest_.at("tensors").at(tensor);
  if (!t.contains("suggested_atol") || t["suggested_atol"].is_null())
    throw std::runtime_error(name() + ": tensor " + tensor + " has no suggested_atol");
  return t["suggested_atol"].get<double>();
}

std::string GoldenCase::role(const std::string& tensor) const {
  return manifest_.at("tensors").at(tensor).at("role").get<std::string>();
}

std::vector<std::string> GoldenCase::names(const std::string& role) const {
  std::vector<std::string> out;
  for (const auto& [name, t] : manifest_.at("tensors").items())
    if (t.value("role", "") == role) out.push_back(name);
  return out;
}

fs::path GoldenCase::model(const std::string& key) const {
  return fs::weakly_canonical(dir_ / manifest_.at("models").at(key).get<std::string>());
}

std::vector<GoldenCase> golden_cases(const std::string& kind) {
  std::vector<GoldenCase> out;
  auto root = golden_root();
  if (root.empty()) return out;
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.path().filename() != "manifest.json") continue;
    auto dir = entry.path().parent_path();
    if (dir.parent_path().filename() != "cases") continue;
    auto folder = dir.filename().string();
    if (folder == kind || (kind.back() == '_' && folder.rfind(kind, 0) == 0)) dirs.push_back(dir);
  }
  std::sort(dirs.begin(), dirs.end());
  for (const auto& d : dirs) out.emplace_back(d);
  return out;
}

double max_abs_diff(const torch::Tensor& actual, const torch::Tensor& expected) {
  auto a = actual.detach().to(torch::kCPU, torch::kFloat64);
  auto e = expected.detach().to(torch::kCPU, torch::kFloat64);
  if (a.sizes() != e.sizes()) return std::numeric_limits<double>::infinity();
  if (a.numel() == 0) return 0.0;
  return (a - e).abs().max().item<double>();
}

double expect_golden(const GoldenCase& c, const std::string& tensor, const torch::Tensor& actual) {
  auto expected = c.get(tensor);
  const double tol = c.atol(tensor);
  EXPECT_EQ(actual.sizes(), expected.sizes()) << c.name() << " " << tensor;
  const double err = max_abs_diff(actual, expected);
  EXPECT_LE(err, tol) << c.name() << " tensor " << tensor << ": max abs error " << err << " > atol " << tol;
  // One line per compared tensor, so a run's log is the parity report.
  std::cout << "[parity] " << c.name() << " " << tensor << " max_abs=" << std::scientific
            << std::setprecision(3) << err << " atol=" << tol << std::defaultfloat << "\n";
  return err;
}

}  // namespace cn::testing
