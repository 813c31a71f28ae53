// ADE20K segmentation (UniFormer-S + UperNet, seg_ufade20k). There is no
// golden output of this network (golden/preprocess/README.md), so these
// tests check what can be known without one: the detector runs a random-weight
// upernet_global_small.pth in the official layout and container (meta,
// auxiliary head) and returns palette colours at the framed size; crafted
// weights whose answer is known (only the classifier's bias, ties to the first
// class as torch's argmax); the loader names what does not fit; and the parts
// computed independently (mmseg's resize, the swapped channels, the attention
// heads, the logits' resizing).
#include <gtest/gtest.h>
#include <unistd.h>

#include <iostream>
#include <opencv2/imgproc.hpp>
#include <set>

#include "controlnet/error.h"
#include "preprocess/ade20k.h"
#include "preprocess/preprocess.h"
#include "preprocess/uniformer.h"
#include "support/uniformer_checkpoint.h"

using namespace cn;
namespace fs = std::filesystem;

namespace {

const char* const kCheckpoint = "upernet_global_small.pth";

// A 300x200 picture with gradients and flat shapes.
cv::Mat test_image() {
  cv::Mat image(200, 300, CV_8UC3);
  for (int y = 0; y < image.rows; ++y)
    for (int x = 0; x < image.cols; ++x) image.at<cv::Vec3b>(y, x) = {uint8_t(x * 255 / 299), uint8_t(y), 90};
  cv::rectangle(image, {40, 30}, {140, 120}, {250, 20, 20}, cv::FILLED);
  cv::circle(image, {220, 130}, 50, {10, 200, 60}, cv::FILLED);
  return image;
}

std::set<std::array<uint8_t, 3>> colours_of(const cv::Mat& rgb) {
  std::set<std::array<uint8_t, 3>> colours;
  for (int y = 0; y < rgb.rows; ++y)
    for (int x = 0; x < rgb.cols; ++x) {
      const auto p = rgb.at<cv::Vec3b>(y, x);
      colours.insert({p[0], p[1], p[2]});
    }
  return colours;
}

void expect_palette_only(const cv::Mat& rgb, const std::string& what) {
  const auto& palette = preprocess::ade20k_palette();
  const std::set<std::array<uint8_t, 3>> allowed(palette.begin(), palette.end());
  for (const auto& colour : colours_of(rgb))
    EXPECT_TRUE(allowed.count(colour)) << what << ": colour " << int(colour[0]) << "," << int(colour[1]) << ","
                                       << int(colour[2]) << " is not in the ADE20K palette";
}

// Every tensor of the layout at zero (num_batches_tracked int64).
io::TensorMap zero_state_dict() {
  io::TensorMap out;
  for (const auto& t : cn::testing::uniformer_checkpoint_layout())
    out[t.name] = t.shape.empty() ? torch::zeros({}, torch::kInt64) : torch::zeros(t.shape);
  return out;
}

std::string load_error(const io::TensorMap& state_dict) {
  try {
    preprocess::load_uniformer(state_dict, "test state dict");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "the state dict was accepted";
  return "";
}

// An annotator folder with a random-weight upernet_global_small.pth in mmcv's
// container, written once.
class UniformerFile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("cn-uniformer-test-" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    cn::testing::write_mmcv_checkpoint(*dir_ / kCheckpoint, cn::testing::uniformer_random_state_dict(20240501));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  static fs::path* dir_;
};
fs::path* UniformerFile::dir_ = nullptr;

}  // namespace

// The file's tensors are its state_dict's, whatever its meta holds (strings,
// the config text, CLASSES tuple, PALETTE lists, a numpy float64).
TEST_F(UniformerFile, CheckpointReadsAsItsStateDictOnly) {
  const auto tensors = preprocess::load_annotator_weights(*dir_ / kCheckpoint, {});
  std::set<std::string> expected;
  for (const auto& t : cn::testing::uniformer_checkpoint_layout()) expected.insert(t.name);
  std::set<std::string> read;
  for (const auto& [name, tensor] : tensors) read.insert(name);
  EXPECT_EQ(read, expected);
  EXPECT_EQ(tensors.at("decode_head.conv_seg.weight").sizes(), c10::IntArrayRef({150, 512, 1, 1}));
}

TEST_F(UniformerFile, DetectorGivesPaletteColoursAtTheFramedSize) {
  EXPECT_EQ(preprocess::find_detector("seg_ufade20k").checkpoint, kCheckpoint);
  const auto image = test_image();
  preprocess::DetectOptions options;
  options.resolution = 256;
  options.annotator_dir = dir_->string();
  const auto map = preprocess::detect("seg_ufade20k", image, options);
  EXPECT_EQ(map.size(), preprocess::resize_image(image, 256).size());
  ASSERT_EQ(map.type(), CV_8UC3);
  expect_palette_only(map, "fp32");
  // Random weights still give a map that varies with the image.
  EXPECT_GE(colours_of(map).size(), 2u);

  options.dtype = torch::kBFloat16;
  const auto bf16 = preprocess::detect("seg_ufade20k", image, options);
  EXPECT_EQ(bf16.size(), map.size());
  expect_palette_only(bf16, "bf16");
  cv::Mat same;
  cv::compare(map.reshape(1, map.rows * map.cols), bf16.reshape(1, map.rows * map.cols), same, cv::CMP_EQ);
  cv::Mat pixel_same;
  cv::reduce(same, pixel_same, 1, cv::REDUCE_MIN);
  std::cout << "[bf16] seg_ufade20k labels equal to fp32's on " << 100.0 * cv::countNonZero(pixel_same) / map.total()
            << " % of the pixels (random weights)\n";
}

TEST_F(UniformerFile, MissingCheckpointNamesTheDownload) {
  const auto empty = *dir_ / "empty";
  fs::create_directories(empty);
  preprocess::DetectOptions options;
  options.annotator_dir = empty.string();
  try {
    preprocess::detect("seg_ufade20k", test_image(), options);
    ADD_FAILURE() << "ran without " << kCheckpoint;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lllyasviel/Annotators/resolve/main/upernet_global_small.pth"),
              std::string::npos)
        << e.what();
  }
}

// With every weight zero, the head's features are zero and the logits are
// conv_seg's bias at every pixel: the map is that class's colour.
TEST(UniformerCrafted, ClassifierBiasAloneDecidesEveryPixel) {
  auto state = zero_state_dict();
  state["decode_head.conv_seg.bias"] = torch::linspace(-1, 1, 150);
  state["decode_head.conv_seg.bias"][37] = 2.0f;
  auto model = preprocess::load_uniformer(state, "crafted");
  const auto map = preprocess::uniformer_detect(model, test_image());
  ASSERT_EQ(map.size(), test_image().size());
  const auto colours = colours_of(map);
  ASSERT_EQ(colours.size(), 1u);
  EXPECT_EQ(*colours.begin(), preprocess::ade20k_palette()[37]);
}

// Equal maxima go to the first class, as torch's argmax (and numpy's) does.
TEST(UniformerCrafted, TiedClassesGoToTheFirst) {
  auto state = zero_state_dict();
  auto bias = torch::zeros({150});
  bias[90] = 3.0f;
  bias[5] = 3.0f;
  bias[120] = 2.5f;
  state["decode_head.conv_seg.bias"] = bias;
  auto model = preprocess::load_uniformer(state, "crafted ties");
  ASSERT_NE(preprocess::ade20k_palette()[5], preprocess::ade20k_palette()[90]);
  const auto colours = colours_of(preprocess::uniformer_detect(model, test_image()));
  ASSERT_EQ(colours.size(), 1u);
  EXPECT_EQ(*colours.begin(), preprocess::ade20k_palette()[5]);
}

TEST(UniformerLoad, NamesWhatDoesNotFit) {
  const auto state = zero_state_dict();

  auto missing = state;
  missing.erase("backbone.blocks3.7.attn.qkv.bias");
  EXPECT_NE(load_error(missing).find("missing tensors (1): backbone.blocks3.7.attn.qkv.bias"), std::string::npos)
      << load_error(missing);

  auto misshapen = state;
  misshapen["decode_head.lateral_convs.1.conv.weight"] = torch::zeros({512, 64, 1, 1});
  EXPECT_NE(load_error(misshapen).find("decode_head.lateral_convs.1.conv.weight (file [512, 64, 1, 1], model [512, "
                                       "128, 1, 1])"),
            std::string::npos)
      << load_error(misshapen);

  auto unknown = state;
  unknown["decode_head.conv_seg2.weight"] = torch::zeros({1});
  EXPECT_NE(load_error(unknown).find("unexpected tensors (1): decode_head.conv_seg2.weight"), std::string::npos);

  // Only the auxiliary head's own tensors are skipped.
  auto unknown_auxiliary = state;
  unknown_auxiliary["auxiliary_head.convs.1.conv.weight"] = torch::zeros({256, 256, 3, 3});
  EXPECT_NE(load_error(unknown_auxiliary).find("unexpected tensors (1): auxiliary_head.convs.1.conv.weight"),
            std::string::npos);
}

TEST(UniformerLoad, AcceptsTheFileWithoutAuxiliaryHeadOrWithModulePrefix) {
  auto state = zero_state_dict();
  io::TensorMap prefixed;
  for (const auto& [name, tensor] : state) prefixed["module." + name] = tensor;
  EXPECT_NO_THROW(preprocess::load_uniformer(prefixed, "module. names"));
  for (const auto& key : preprocess::uniformer_auxiliary_head_keys()) ASSERT_EQ(state.erase(key), 1u) << key;
  EXPECT_NO_THROW(preprocess::load_uniformer(state, "no auxiliary head"));
}

// mmseg's Resize(img_scale=(2048, 512), keep_ratio=True): up or down to a
// short side of 512 unless the long side would pass 2048; int(x + 0.5).
TEST(UniformerInput, NetworkSizeIsMmsegsRescale) {
  EXPECT_EQ(preprocess::uniformer_network_size({512, 512}), cv::Size(512, 512));
  EXPECT_EQ(preprocess::uniformer_network_size({300, 200}), cv::Size(768, 512));
  EXPECT_EQ(preprocess::uniformer_network_size({640, 384}), cv::Size(853, 512));    // 853.33
  EXPECT_EQ(preprocess::uniformer_network_size({2560, 512}), cv::Size(2048, 410));  // 409.6
  EXPECT_EQ(preprocess::uniformer_network_size({100, 700}), cv::Size(293, 2048));   // 292.57
  EXPECT_EQ(preprocess::uniformer_network_size({1024, 1024}), cv::Size(512, 512));
}

// The annotator gives mmseg RGB where it expects BGR: channel 0 is the blue
// value normalised with red's mean and std.
TEST(UniformerInput, ChannelsAreSwappedAndNormalised) {
  cv::Mat image(512, 576, CV_8UC3, cv::Scalar(0, 0, 0));
  image.at<cv::Vec3b>(10, 20) = {200, 100, 30};  // R, G, B
  const auto input = preprocess::uniformer_input(image);
  ASSERT_EQ(input.sizes(), c10::IntArrayRef({1, 3, 512, 576}));
  const auto at = [&](int c) { return input[0][c][10][20].item<float>(); };
  EXPECT_NEAR(at(0), (30 - 123.675) / 58.395, 1e-5);
  EXPECT_NEAR(at(1), (100 - 116.28) / 57.12, 1e-5);
  EXPECT_NEAR(at(2), (200 - 103.53) / 57.375, 1e-5);
  EXPECT_NEAR(input[0][0][0][0].item<float>(), -123.675 / 58.395, 1e-5);
}

// The heads' split of qkv, against attention computed head by head and token
// by token with plain loops.
TEST(UniformerAttention, HeadsAreSplitAsTheReference) {
  torch::manual_seed(3);
  const int64_t batch = 2, tokens = 5, channels = 12, heads = 3, d = channels / heads;
  torch::nn::Linear qkv(channels, 3 * channels), proj(channels, channels);
  const auto x = torch::randn({batch, tokens, channels});
  torch::NoGradGuard no_grad;
  const auto out = preprocess::uniformer_detail::self_attention(x, qkv, proj, heads);

  const auto projected = qkv(x);  // per token: [q (heads x d), k, v]
  auto concatenated = torch::zeros({batch, tokens, channels});
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t n = 0; n < tokens; ++n) {
        const auto q = projected[b][n].slice(0, h * d, (h + 1) * d);
        auto scores = torch::zeros({tokens});
        for (int64_t m = 0; m < tokens; ++m)
          scores[m] = (q * projected[b][m].slice(0, channels + h * d, channels + (h + 1) * d)).sum() / std::sqrt(d);
        const auto weights = scores.softmax(0);
        auto value = torch::zeros({d});
        for (int64_t m = 0; m < tokens; ++m)
          value += weights[m] * projected[b][m].slice(0, 2 * channels + h * d, 2 * channels + (h + 1) * d);
        concatenated[b][n].slice(0, h * d, (h + 1) * d) = value;
      }
  EXPECT_TRUE(torch::allclose(out, proj(concatenated), 1e-5, 1e-6));
}

// Logits preferring one class per quadrant: bilinear to the network size and
// then to the image size keeps the quadrants; the labels are uint8 classes.
TEST(UniformerLabels, LogitsAreResizedToTheImageThenArgmaxed) {
  auto logits = torch::zeros({1, 150, 2, 2});
  logits[0][3][0][0] = 1;
  logits[0][149][0][1] = 1;
  logits[0][0][1][0] = 1;
  logits[0][77][1][1] = 1;
  const auto labels = preprocess::uniformer_labels(logits, {8, 8}, {12, 16});
  ASSERT_EQ(labels.size(), cv::Size(12, 16));
  ASSERT_EQ(labels.type(), CV_8UC1);
  EXPECT_EQ(labels.at<uint8_t>(0, 0), 3);
  EXPECT_EQ(labels.at<uint8_t>(7, 5), 3);
  EXPECT_EQ(labels.at<uint8_t>(0, 11), 149);
  EXPECT_EQ(labels.at<uint8_t>(8, 0), 0);
  EXPECT_EQ(labels.at<uint8_t>(15, 6), 77);
}
