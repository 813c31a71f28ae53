// `controlnet generate` as users run it: the same image as the library call,
// from either weight layout; byte-identical reruns; clear errors with exit
// code 2 and no output file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "controlnet/pipeline.h"
#include "io/image.h"
#include "preprocess/openpose_draw.h"
#include "support/golden.h"
#include "support/preprocess_fixtures.h"
#include "support/recipe.h"

namespace fs = std::filesystem;

namespace {

struct Run {
  int code;
  std::string output;
};

Run cli(const std::string& args) {
  const auto log = fs::temp_directory_path() / "cn_cli_test.log";
  const int status = std::system((std::string(CONTROLNET_CLI) + " " + args + " > " + log.string() + " 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream s;
  s << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, s.str()};
}

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST(Cli, GenerateMatchesTheLibraryInBothLayouts) {
  CN_REQUIRE_GOLDEN();
  const auto root = cn::testing::golden_root() / "mini-sd15";
  const auto control = root / "cases/e2e_ddim10_cfg7.5_cn1.0/control_image_0.png";
  const auto tmp = fs::temp_directory_path() / "cn_cli_generate";
  fs::create_directories(tmp);
  const std::string common = " -p \"a photo of a cat\" -n blurry --steps 4 --sampler euler_a --seed 7 -W 128 -H 128 --control " +
                             control.string() + " --controlnet ";
  auto a = cli("generate -m " + root.string() + common + (root / "controlnet").string() + " -o " + (tmp / "a.png").string());
  ASSERT_EQ(a.code, 0) << a.output;
  auto b = cli("generate -m " + root.string() + common + (root / "controlnet").string() + " -o " + (tmp / "b.png").string());
  ASSERT_EQ(b.code, 0) << b.output;
  EXPECT_EQ(bytes_of(tmp / "a.png"), bytes_of(tmp / "b.png")) << "same seed, different PNG";
  auto ldm = cli("generate -m " + (root / "ldm/sd15_mini.safetensors").string() + common +
                 (root / "ldm/control_sd15_mini.safetensors").string() + " -o " + (tmp / "ldm.png").string());
  ASSERT_EQ(ldm.code, 0) << ldm.output;

  cn::ModelOptions model{root.string()};
  cn::GenerateOptions o;
  o.prompt = "a photo of a cat";
  o.negative_prompt = "blurry";
  o.steps = 4;
  o.width = o.height = 128;  // LDM files do not record the native size (SD1 files default to 512)
  o.sampler = "euler_a";
  o.seed = 7;
  o.controls.push_back({(root / "controlnet").string(), control.string()});
  auto image = cn::Pipeline::load(model)->generate(o).at(0);
  auto from_cli = cn::io::read_rgb_image((tmp / "a.png").string());
  auto from_ldm = cn::io::read_rgb_image((tmp / "ldm.png").string());
  ASSERT_EQ(from_cli.cols, image.image.width);
  EXPECT_TRUE(std::equal(image.image.rgb.begin(), image.image.rgb.end(), from_cli.data)) << "CLI and library differ";
  EXPECT_TRUE(std::equal(image.image.rgb.begin(), image.image.rgb.end(), from_ldm.data)) << "LDM and diffusers differ";
  std::string parameters;
  for (const auto& [key, value] : cn::io::read_png_text((tmp / "a.png").string()))
    if (key == "parameters") parameters = value;
  EXPECT_NE(parameters.find("Seed: 7"), std::string::npos) << parameters;
  EXPECT_NE(parameters.find("ControlNet 0"), std::string::npos) << parameters;
  fs::remove_all(tmp);
}

TEST(Cli, ErrorsAreClearAndWriteNothing) {
  CN_REQUIRE_GOLDEN();
  const auto root = cn::testing::golden_root() / "mini-sd15";
  const auto out = fs::temp_directory_path() / "cn_cli_error.png";
  fs::remove(out);
  const std::string base = "generate -m " + root.string() + " -p x --steps 2 -o " + out.string();
  struct Case {
    std::string args, message;
  } cases[] = {
      {" --controlnet " + (root / "controlnet").string(), "control image"},
      {" --sampler heun", "euler_a"},
      {" -W 100", "multiples of 8"},
      {" --control /nonexistent.png --controlnet " + (root / "controlnet").string(), "/nonexistent.png"},
      {" --cfg -3", "cfg"},
  };
  for (const auto& c : cases) {
    auto r = cli(base + c.args);
    EXPECT_EQ(r.code, 2) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << ": " << r.output;
    EXPECT_FALSE(fs::exists(out)) << c.args << " wrote an output";
  }
}

// `controlnet detect` with a neural annotator: the checkpoint is found in
// --annotator-dir by its official name (here the PiDiNet recipe written as
// table5_pidinet.safetensors); without it the error names the download.
TEST(Cli, DetectRunsAnAnnotatorCheckpointOrNamesTheDownload) {
  CN_REQUIRE_GOLDEN();
  const auto case_dir = cn::testing::preprocess_case_dir("pidinet");
  const auto annotators = fs::temp_directory_path() / "cn_cli_annotators";
  const auto out = fs::temp_directory_path() / "cn_cli_softedge.png";
  fs::remove_all(annotators);
  fs::remove(out);
  fs::create_directories(annotators);
  cn::io::save_safetensors((annotators / "table5_pidinet.safetensors").string(),
                           cn::testing::recipe_weights(cn::testing::recipe_path("pidinet")));
  const std::string args = "detect --type softedge_pidinet " + (case_dir / "shapes_input.png").string() + " " +
                           out.string() + " --resolution 256 --annotator-dir ";
  auto r = cli(args + annotators.string());
  ASSERT_EQ(r.code, 0) << r.output;
  cv::Mat map;
  cv::extractChannel(cn::testing::read_png(out), map, 0);  // the gray map written as RGB
  cn::testing::expect_u8_map_close(map, cn::testing::read_png(case_dir / "shapes_out.png"), "cli softedge_pidinet");

  // generate --preprocess finds the same checkpoint through --annotator-dir.
  const auto generated = fs::temp_directory_path() / "cn_cli_generate_pidinet.png";
  r = cli("generate -p \"red circle\" --steps 2 --seed 1 --control " + (case_dir / "shapes_input.png").string() +
          " --preprocess softedge_pidinet --annotator-dir " + annotators.string() + " -o " + generated.string());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(generated));
  fs::remove(generated);

  fs::remove(out);
  fs::remove(annotators / "table5_pidinet.safetensors");
  r = cli(args + annotators.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("https://huggingface.co/lllyasviel/Annotators/resolve/main/table5_pidinet.pth"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(out));
  fs::remove_all(annotators);
}

// `controlnet detect --type openpose --pose-json`: the body checkpoint (recipe
// as body_pose_model.safetensors) gives the annotator's pose, drawn and as
// sd-webui-controlnet's keypoints JSON; the hand stage names its missing file;
// a detector without keypoints refuses --pose-json and writes nothing.
TEST(Cli, DetectOpenposeWritesTheMapAndTheKeypointsJson) {
  CN_REQUIRE_GOLDEN();
  const auto case_dir = cn::testing::preprocess_case_dir("openpose_nets");
  const auto manifest = cn::testing::preprocess_manifest("openpose_nets");
  const auto annotators = fs::temp_directory_path() / "cn_cli_openpose";
  const auto out = fs::temp_directory_path() / "cn_cli_openpose.png";
  const auto json_path = fs::temp_directory_path() / "cn_cli_openpose.json";
  fs::remove_all(annotators);
  fs::create_directories(annotators);
  cn::io::save_safetensors((annotators / "body_pose_model.safetensors").string(),
                           cn::testing::recipe_weights(cn::testing::recipe_path("openpose_body")));
  const auto input = (case_dir / "figure_rgba_input.png").string();  // 384 x 256: resize_image(256) keeps it
  const std::string dir = " --resolution 256 --annotator-dir " + annotators.string();
  auto r = cli("detect --type openpose " + input + " " + out.string() + dir + " --pose-json " + json_path.string());
  ASSERT_EQ(r.code, 0) << r.output;

  std::ifstream in(json_path);
  const auto json = nlohmann::json::parse(in);
  EXPECT_EQ(json.at("canvas_width").get<int>(), 256);
  EXPECT_EQ(json.at("canvas_height").get<int>(), 384);
  const auto& pose = manifest.at("detected_pose").at("bodies");
  ASSERT_EQ(json.at("people").size(), pose.at("subset").size());
  for (size_t person = 0; person < json.at("people").size(); ++person) {
    const auto& p = json.at("people")[person];
    EXPECT_TRUE(p.at("hand_left_keypoints_2d").is_null());
    EXPECT_TRUE(p.at("face_keypoints_2d").is_null());
    const auto& flat = p.at("pose_keypoints_2d");
    ASSERT_EQ(flat.size(), 54u);
    for (size_t part = 0; part < 18; ++part) {
      const int index = int(pose.at("subset")[person][part].get<double>());
      const double x = index == -1 ? 0.0 : pose.at("candidate")[size_t(index)][0].get<double>();
      EXPECT_EQ(flat[part * 3].get<double>(), x) << "person " << person << " part " << part;
      EXPECT_EQ(flat[part * 3 + 2].get<double>(), index == -1 ? 0.0 : 1.0);
    }
  }
  // The map: the annotator's pose, body only.
  cn::preprocess::PoseResult expected;
  for (const auto& c : pose.at("candidate")) expected.bodies.candidate.push_back({c[0].get<double>(), c[1].get<double>()});
  for (const auto& row : pose.at("subset")) expected.bodies.subset.push_back(row.get<std::vector<double>>());
  EXPECT_EQ(cn::testing::differing_pixels(cn::testing::read_png(out), cn::preprocess::draw_pose(expected, 384, 256)), 0);

  r = cli("detect --type openpose_hand " + input + " " + out.string() + dir);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("hand_pose_model.pth"), std::string::npos) << r.output;

  fs::remove(out);
  r = cli("detect --type canny " + input + " " + out.string() + " --pose-json " + json_path.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("gives no keypoints"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  fs::remove_all(annotators);
}

// A model folder's generation.json sets the sampling defaults; flags given on
// the command line still win, and a file with an unknown key is an error.
TEST(Cli, GenerateTakesTheModelsRecommendedSettingsUnlessGiven) {
  const auto model = fs::temp_directory_path() / "cn_cli_recommended";
  fs::remove_all(model);
  fs::copy(fs::path(CONTROLNET_SOURCE_DIR) / "models/default", model, fs::copy_options::recursive);
  auto write_settings = [&](const std::string& json) { std::ofstream(model / "generation.json") << json; };
  auto parameters_of = [](const fs::path& png) {
    for (const auto& [key, value] : cn::io::read_png_text(png.string()))
      if (key == "parameters") return value;
    return std::string();
  };
  const auto out = model / "out.png";
  const std::string common = "generate -m " + model.string() + " -p \"red circle with blue background\" --seed 1 -o " + out.string();
  write_settings(R"({"steps": 3, "cfg": 2.5, "sampler": "ddim"})");
  auto run = cli(common);
  ASSERT_EQ(run.code, 0) << run.output;
  auto parameters = parameters_of(out);
  EXPECT_NE(parameters.find("Steps: 3, Sampler: ddim, CFG scale: 2.5,"), std::string::npos) << parameters;

  run = cli(common + " --steps 2 --cfg 4");
  ASSERT_EQ(run.code, 0) << run.output;
  parameters = parameters_of(out);
  EXPECT_NE(parameters.find("Steps: 2, Sampler: ddim, CFG scale: 4,"), std::string::npos) << parameters;

  write_settings(R"({"guidance": 3})");
  fs::remove(out);
  run = cli(common);
  EXPECT_EQ(run.code, 2) << run.output;
  EXPECT_NE(run.output.find("generation.json: unknown key 'guidance'"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(out));
  fs::remove_all(model);
}
