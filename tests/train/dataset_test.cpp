// Bad training data is reported with prompt.json's path and line, or left
// out and counted with skip_bad.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "controlnet/error.h"
#include "io/image.h"
#include "train/dataset.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// 6 good samples (lines 1-6), then the given extra lines.
fs::path dataset_with(const std::string& name, const std::vector<std::string>& extra_lines) {
  const auto dir = fs::temp_directory_path() / name;
  fs::remove_all(dir);
  train::write_fill_dataset(dir.string(), 6, 64, 3);
  std::ofstream index(dir / "prompt.json", std::ios::app);
  for (const auto& line : extra_lines) index << line << "\n";
  return dir;
}

}  // namespace

TEST(DatasetBadInput, BadLinesNameFileAndLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"source\": \"source/0.png\", \"target\": ", "not valid JSON"},
      {"{\"source\": \"source/0.png\", \"prompt\": \"x\"}", "no field \"target\""},
      {"{\"source\": \"source/0.png\", \"target\": \"target/0.png\", \"prompt\": 3}", "field \"prompt\" is not a string"},
      {"{\"source\": \"source/missing.png\", \"target\": \"target/0.png\", \"prompt\": \"x\"}", "does not exist"},
  };
  for (const auto& [line, problem] : cases) {
    const auto dir = dataset_with("cn_bad_line_test", {line});
    const auto message = error_of([&] { train::PairDataset data(dir.string(), 64); });
    EXPECT_NE(message.find((dir / "prompt.json").string() + ":7: "), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos) << message;
    fs::remove_all(dir);
  }
  const auto dir = dataset_with("cn_bad_line_test", {cases[0].first, cases[1].first, cases[3].first});
  std::vector<std::string> reported;
  train::PairDataset data(dir.string(), 64, true, [&](const std::string& m) { reported.push_back(m); });
  EXPECT_EQ(data.size(), 6u);
  EXPECT_EQ(data.skipped_lines(), 3);
  ASSERT_EQ(reported.size(), 3u);
  EXPECT_NE(reported[2].find("prompt.json:9: "), std::string::npos) << reported[2];
  fs::remove_all(dir);
}

TEST(DatasetBadInput, UndecodableImagesAndSizeMismatch) {
  const auto dir = dataset_with("cn_bad_image_test", {});
  std::ofstream(dir / "target" / "2.png", std::ios::trunc) << "not a png";
  io::write_png((dir / "source" / "4.png").string(), cv::Mat(32, 48, CV_8UC3, cv::Scalar::all(0)));
  {
    train::PairDataset data(dir.string(), 64);
    auto corrupt = error_of([&] { data.load({2}); });
    EXPECT_NE(corrupt.find("prompt.json:3: "), std::string::npos) << corrupt;
    EXPECT_NE(corrupt.find("2.png"), std::string::npos) << corrupt;
    auto mismatch = error_of([&] { data.load({4}); });
    EXPECT_NE(mismatch.find("prompt.json:5: "), std::string::npos) << mismatch;
    EXPECT_NE(mismatch.find("48x32"), std::string::npos) << mismatch;
    EXPECT_NE(mismatch.find("64x64"), std::string::npos) << mismatch;
  }
  std::vector<std::string> reported;
  train::PairDataset data(dir.string(), 64, true, [&](const std::string& m) { reported.push_back(m); });
  // The bad samples' places go to the next good ones in index order.
  auto batch = data.load({2, 4, 0});
  EXPECT_EQ(batch.indices, (std::vector<size_t>{3, 5, 0}));
  EXPECT_EQ(batch.images.size(0), 3);
  EXPECT_EQ(reported.size(), 2u);
  EXPECT_EQ(data.failed_samples().sum().item<int64_t>(), 2);
  EXPECT_EQ(data.load({2}).indices, std::vector<size_t>{3});  // known bad: not decoded nor reported again
  EXPECT_EQ(reported.size(), 2u);
  fs::remove_all(dir);
}
