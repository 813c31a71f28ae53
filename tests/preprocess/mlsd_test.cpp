// M-LSD against the 1.1 annotator (annotator/mlsd): decoding and drawing
// exact on the crafted tp map (mlsd_decode_crafted) and on the saved network
// output (mlsd); the network on the shipped random-weight
// mlsd_large_512_fp32.pth within the README's raw tolerance, and its lines and
// maps; the "mlsd" detector through the annotator folder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "controlnet/error.h"
#include "io/safetensors.h"
#include "preprocess/mlsd.h"
#include "preprocess/mlsd_net.h"
#include "preprocess/preprocess.h"
#include "support/preprocess_fixtures.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

const char* const kCheckpoint = "mlsd_large_512_fp32.pth";

fs::path shipped_checkpoint() { return cn::testing::golden_root() / "preprocess" / "weights" / kCheckpoint; }

// Lines as an (N, 4) float64 tensor, rows sorted (the top-k order among equal
// scores is implementation-defined).
torch::Tensor sorted_lines(std::vector<preprocess::MlsdLine> lines) {
  std::sort(lines.begin(), lines.end());
  auto out = torch::empty({int64_t(lines.size()), 4}, torch::kFloat64);
  for (size_t i = 0; i < lines.size(); ++i)
    for (int j = 0; j < 4; ++j) out[int64_t(i)][j] = lines[i][size_t(j)];
  return out;
}

std::vector<preprocess::MlsdLine> lines_of(const torch::Tensor& rows) {
  std::vector<preprocess::MlsdLine> lines(size_t(rows.size(0)));
  const auto r = rows.to(torch::kFloat64).contiguous();
  for (size_t i = 0; i < lines.size(); ++i)
    for (int j = 0; j < 4; ++j) lines[i][size_t(j)] = r[int64_t(i)][j].item<double>();
  return lines;
}

// The case's threshold pairs, from the saved lines_thr<v>_<d> tensors.
std::vector<std::pair<std::string, std::pair<double, double>>> saved_thresholds(const io::TensorMap& raw) {
  std::vector<std::pair<std::string, std::pair<double, double>>> out;
  const std::string prefix = "lines_thr";
  for (const auto& [name, tensor] : raw) {
    if (name.rfind(prefix, 0) != 0) continue;
    const auto suffix = name.substr(prefix.size());
    const auto split = suffix.find('_');
    out.push_back({suffix, {std::stod(suffix.substr(0, split)), std::stod(suffix.substr(split + 1))}});
  }
  return out;
}

}  // namespace

TEST(Mlsd, DecodeAndDrawCraftedMapExactly) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("mlsd_decode_crafted");
  const auto manifest = cn::testing::preprocess_manifest("mlsd_decode_crafted");
  const auto tpmap = io::load_safetensors((dir / "tpmap.safetensors").string()).at("tpmap");
  const int height = manifest.at("params").at("H").get<int>();
  const int width = manifest.at("params").at("W").get<int>();
  int cases = 0;
  for (const auto& row : manifest.at("table")) {
    ++cases;
    const auto thr_v = row.at("thr_v").get<double>(), thr_d = row.at("thr_d").get<double>();
    auto lines = preprocess::mlsd_decode_lines(tpmap, thr_v, thr_d);
    ASSERT_EQ(int(lines.size()), row.at("n_lines").get<int>()) << row.dump();

    // The top-k order among equal scores is implementation-defined: compare sorted.
    std::string png = row.at("png").get<std::string>();
    const std::string stem = "lines" + png.substr(3, png.size() - 7);
    const auto expected = io::load_safetensors((dir / (stem + ".safetensors")).string()).at("lines_sorted");
    EXPECT_EQ(cn::testing::max_abs_diff(sorted_lines(lines), expected), 0.0) << row.dump();

    const auto map = preprocess::mlsd_draw_lines(lines, height, width);
    const auto expected_map = cn::testing::read_png(dir / png);
    EXPECT_EQ(cn::testing::differing_pixels(map, expected_map), 0) << row.dump();
  }
  EXPECT_EQ(cases, 4);
}

// Step 4 of the fixtures' README: the annotator's saved random-network tp map
// through our decoder gives its lines and maps exactly.
TEST(Mlsd, DecodeSavedNetworkOutputExactly) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("mlsd");
  const auto raw = io::load_safetensors((dir / "photo_room_raw.safetensors").string());
  int cases = 0;
  for (const std::string thresholds : {"0.1_0.1", "0.3_4.0"}) {
    ++cases;
    const auto split = thresholds.find('_');
    const double thr_v = std::stod(thresholds.substr(0, split)), thr_d = std::stod(thresholds.substr(split + 1));
    const auto lines = preprocess::mlsd_decode_lines(raw.at("tpmap"), thr_v, thr_d);
    const auto& expected = raw.at("lines_thr" + thresholds);
    ASSERT_EQ(int64_t(lines.size()), expected.size(0)) << thresholds;
    EXPECT_EQ(cn::testing::max_abs_diff(sorted_lines(lines), sorted_lines(lines_of(expected))), 0.0) << thresholds;
    const auto map = preprocess::mlsd_draw_lines(lines, 256, 320);
    const auto expected_map = cn::testing::read_png(dir / ("photo_room_out_thr" + thresholds + ".png"));
    EXPECT_EQ(cn::testing::differing_pixels(map, expected_map), 0) << thresholds;
  }
  EXPECT_EQ(cases, 2);
}

// The network with the shipped checkpoint (read through the annotator loader,
// as the detector reads it): the exact net input, the tp map within the
// README's raw tolerance, then the lines decoded from our tp map and their maps.
TEST(MlsdNet, NetworkLinesAndMapsMatchTheAnnotator) {
  CN_REQUIRE_GOLDEN();
  const auto dir = cn::testing::preprocess_case_dir("mlsd");
  const auto raw = io::load_safetensors((dir / "photo_room_raw.safetensors").string());
  auto model = preprocess::load_mlsd(preprocess::load_annotator_weights(shipped_checkpoint(), {}), kCheckpoint);
  const auto rgb = cn::testing::read_png(dir / "photo_room_input.png");
  const auto input = preprocess::mlsd_input(rgb);
  EXPECT_EQ(cn::testing::max_abs_diff(input, raw.at("net_input")), 0.0);

  torch::NoGradGuard no_grad;
  const auto tpmap = model->forward(input);
  cn::testing::expect_raw_close(tpmap, raw.at("tpmap"), "mlsd photo_room tpmap");
  const double tpmap_tolerance = 1e-4 * std::max(1.0, raw.at("tpmap").abs().max().item<double>());

  const auto thresholds = saved_thresholds(raw);
  EXPECT_EQ(thresholds.size(), 2u);
  for (const auto& [name, thr] : thresholds) {
    SCOPED_TRACE(name);
    const auto lines = preprocess::mlsd_decode_lines(tpmap, thr.first, thr.second);
    const auto& expected = raw.at("lines_thr" + name);
    ASSERT_EQ(int64_t(lines.size()), expected.size(0));
    // Endpoints are 2 * (centre + displacement): twice the tp map's error.
    const double error = cn::testing::max_abs_diff(sorted_lines(lines), sorted_lines(lines_of(expected)));
    std::cout << "[parity] mlsd lines thr " << name << " max_abs=" << error << " tolerance " << 2 * tpmap_tolerance
              << "\n";
    EXPECT_LE(error, 2 * tpmap_tolerance);
    cn::testing::expect_u8_map_close(preprocess::mlsd_draw_lines(lines, rgb.rows, rgb.cols),
                                     cn::testing::read_png(dir / ("photo_room_out_thr" + name + ".png")),
                                     "mlsd photo_room map thr " + name);
  }
}

TEST(MlsdNet, RejectsSizesItCannotHalveFourTimes) {
  preprocess::MlsdLarge model;
  torch::NoGradGuard no_grad;
  EXPECT_THROW(model->forward(torch::zeros({1, 4, 40, 64})), Error);
  EXPECT_THROW(model->forward(torch::zeros({1, 3, 32, 32})), Error);
  EXPECT_EQ(model->forward(torch::zeros({1, 4, 32, 48})).sizes(), (std::vector<int64_t>{1, 9, 16, 24}));
}

TEST(MlsdNet, InputOfCroppedViewsGivesTheirPixels) {
  cv::Mat image(40, 50, CV_8UC3);
  cv::randu(image, 0, 256);
  const cv::Mat crop = image(cv::Rect(3, 5, 32, 16));
  ASSERT_FALSE(crop.isContinuous());
  EXPECT_TRUE(torch::equal(preprocess::mlsd_input(crop), preprocess::mlsd_input(crop.clone())));
}

// The registered detector finds mlsd_large_512_fp32.pth by its official name
// in the annotator folder, uses the 1.1 defaults (0.1, 0.1) and the given
// thresholds, and names the download when the file is missing.
TEST(MlsdNet, DetectorRunsTheCheckpointFromTheAnnotatorFolder) {
  CN_REQUIRE_GOLDEN();
  const auto& detector = preprocess::find_detector("mlsd");
  EXPECT_EQ(detector.checkpoint, kCheckpoint);
  EXPECT_EQ(detector.default_a, 0.1);
  EXPECT_EQ(detector.default_b, 0.1);

  const auto dir = cn::testing::preprocess_case_dir("mlsd");
  const auto input = cn::testing::read_png(dir / "photo_room_input.png");
  const auto annotator_dir = fs::temp_directory_path() / ("cn-mlsd-test-" + std::to_string(::getpid()));
  fs::create_directories(annotator_dir);
  preprocess::DetectOptions options;
  options.resolution = std::min(input.rows, input.cols);
  options.annotator_dir = annotator_dir.string();
  try {
    preprocess::detect("mlsd", input, options);
    ADD_FAILURE() << "ran without " << kCheckpoint;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(std::string("lllyasviel/Annotators/resolve/main/") + kCheckpoint),
              std::string::npos)
        << e.what();
  }

  fs::copy_file(shipped_checkpoint(), annotator_dir / kCheckpoint);
  const auto defaults = preprocess::detect("mlsd", input, options);
  options.threshold_a = 0.3;
  options.threshold_b = 4.0;
  const auto strict = preprocess::detect("mlsd", input, options);
  fs::remove_all(annotator_dir);
  cn::testing::expect_u8_map_close(defaults, preprocess::hwc3(cn::testing::read_png(dir / "photo_room_out_thr0.1_0.1.png")),
                                   "detect mlsd defaults");
  cn::testing::expect_u8_map_close(strict, preprocess::hwc3(cn::testing::read_png(dir / "photo_room_out_thr0.3_4.0.png")),
                                   "detect mlsd 0.3 4.0");
}
