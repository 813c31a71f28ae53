// The fill-task metric measures what it claims: an ideal disk scores (almost)
// perfectly, and a misplaced disk or wrong colours do not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "io/image.h"
#include "train/dataset.h"
#include "train/fill_metrics.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

struct Sample {
  cv::Mat source, target;
  std::string prompt;
};

std::vector<Sample> fill_samples(int count, int size) {
  const auto dir = fs::temp_directory_path() / ("fill_metrics_" + std::to_string(size));
  fs::remove_all(dir);
  train::write_fill_dataset(dir.string(), count, size, 11);
  std::vector<Sample> samples;
  std::ifstream index(dir / "prompt.json");
  for (std::string line; std::getline(index, line);) {
    const auto j = nlohmann::json::parse(line);
    samples.push_back({io::read_rgb_image((dir / j["source"].get<std::string>()).string()),
                       io::read_rgb_image((dir / j["target"].get<std::string>()).string()), j["prompt"]});
  }
  return samples;
}

}  // namespace

TEST(FillMetrics, OutlineCircleIsFittedToTheDrawnLine) {
  cv::Mat outline(64, 64, CV_8UC3, cv::Scalar::all(0));
  cv::circle(outline, {30, 25}, 12, cv::Scalar::all(255), 1, cv::LINE_AA);
  const auto c = train::fit_outline_circle(outline);
  EXPECT_NEAR(c.cx, 30, 0.05);
  EXPECT_NEAR(c.cy, 25, 0.05);
  EXPECT_NEAR(c.r, 12, 0.3);
  EXPECT_THROW(train::fit_outline_circle(cv::Mat(8, 8, CV_8UC3, cv::Scalar::all(0))), std::exception);
}

// The dataset's disks (drawn by covered area, their edge on the outline's
// centre line), as a perfect model would paint them, score IoU near 1 and the
// right colours.
TEST(FillMetrics, IdealDisksScoreNearOne) {
  const auto& colours = train::fill_colours();
  double worst = 1;
  int k = 0;
  for (int size : {64, 128})
    for (int r = size / 8; r <= size * 2 / 5; r += 3, ++k) {
      const cv::Point centre(size / 2 + (k % 5) - 2, r + 1 + k % 7);
      const auto& fill = colours[size_t(k) % colours.size()];
      const auto& background = colours[size_t(k + 7) % colours.size()];
      const auto [outline, disk] = train::draw_fill_sample(size, centre, r, fill.second, background.second);
      const auto prompt = fill.first + " circle with " + background.first + " background";
      const auto score = train::score_fill(disk, outline, prompt);
      EXPECT_TRUE(score.colours_right) << prompt << ": saw " << score.fill_seen << " / " << score.background_seen;
      worst = std::min(worst, score.iou);
    }
  EXPECT_GT(worst, 0.95);
}

TEST(FillMetrics, MisplacedDisksAndWrongColoursScoreLow) {
  const auto samples = fill_samples(20, 64);
  for (const auto& s : samples) {
    cv::Mat shifted;
    const cv::Mat shift = (cv::Mat_<double>(2, 3) << 1, 0, 6, 0, 1, 0);
    cv::warpAffine(s.target, shifted, shift, s.target.size(), cv::INTER_NEAREST, cv::BORDER_REPLICATE);
    const auto exact = train::score_fill(s.target, s.source, s.prompt);
    const auto moved = train::score_fill(shifted, s.source, s.prompt);
    EXPECT_LT(moved.iou, exact.iou - 0.1) << s.prompt;
  }
  // Another sample's target: other colours (prompts differ), so not right.
  const auto& a = samples[0];
  for (const auto& b : samples)
    if (b.prompt != a.prompt) {
      EXPECT_FALSE(train::score_fill(b.target, b.source, a.prompt).colours_right) << a.prompt << " vs " << b.prompt;
      break;
    }
}
