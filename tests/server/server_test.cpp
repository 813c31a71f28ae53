// `controlnet serve` over HTTP on a free local port, with the embedded default
// model: jobs give what the library gives, errors are clear, cancel works.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "controlnet/pipeline.h"
#include "io/image.h"
#include "pipeline/default_model.h"
#include "preprocess/preprocess.h"
#include "server/server.h"

using namespace cn;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const fs::path kControl = fs::path(CONTROLNET_SOURCE_DIR) / "examples" / "circle.png";

// One server for the whole suite: loading the model once keeps the tests fast.
class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server::ServerOptions options;
    options.port = 0;
    options.max_steps = 400;
    server_ = std::make_unique<server::Server>(options);
    port_ = server_->bind();
    thread_ = std::thread([] { server_->run(); });
  }
  static void TearDownTestSuite() {
    server_->stop();
    thread_.join();
    server_.reset();
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }

  httplib::Result submit(const json& options, const std::vector<httplib::MultipartFormData>& parts = {}) {
    httplib::MultipartFormDataItems items = {{"options", options.dump(), "", "application/json"}};
    items.insert(items.end(), parts.begin(), parts.end());
    return client().Post("/api/jobs", items);
  }

  // Polls until the job leaves queued/running; returns its last status.
  json wait(const std::string& id) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    while (std::chrono::steady_clock::now() < deadline) {
      auto res = client().Get("/api/jobs/" + id);
      EXPECT_TRUE(res && res->status == 200);
      if (!res) break;
      auto status = json::parse(res->body);
      if (status["state"] != "queued" && status["state"] != "running") return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "job " << id << " did not finish";
    return {};
  }

  static std::string error_of(const httplib::Result& res) {
    return res ? json::parse(res->body).value("error", std::string()) : "no response";
  }

  static inline std::unique_ptr<server::Server> server_;
  static inline std::thread thread_;
  static inline int port_ = 0;
};

TEST_F(ServerTest, JobGivesTheLibrarysImageWithItsParameters) {
  const json options = {{"prompt", "red circle with blue background"},
                        {"steps", 8},
                        {"seed", 7},
                        {"sampler", "ddim"},
                        {"controls", {{{"image", "c0"}, {"scale", 1.0}}}}};
  auto res = submit(options, {{"c0", read_bytes(kControl), "circle.png", "image/png"}});
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 202) << res->body;
  const auto id = json::parse(res->body)["id"].get<std::string>();
  const auto status = wait(id);
  ASSERT_EQ(status["state"], "done") << status.dump();
  EXPECT_EQ(status["step"], 8);
  EXPECT_EQ(status["seeds"], json::array({7}));

  auto png = client().Get("/api/jobs/" + id + "/images/0");
  ASSERT_TRUE(png);
  ASSERT_EQ(png->status, 200);
  EXPECT_EQ(png->get_header_value("Content-Type"), "image/png");
  const auto served = io::decode_rgb_image(png->body, "served image");

  // The same request through the library (what the request leaves out is
  // the model's recommendation).
  auto pipe = Pipeline::load({});
  GenerateOptions o = pipe->recommended_options();
  o.prompt = options["prompt"];
  o.steps = 8;
  o.seed = 7;
  o.sampler = "ddim";
  ControlNetUnit unit;
  unit.model = (fs::path(default_model_dir()) / "controlnet").string();
  unit.image = kControl.string();
  o.controls.push_back(unit);
  const auto expected = pipe->generate(o).at(0);
  ASSERT_EQ(served.cols, expected.image.width);
  ASSERT_EQ(served.rows, expected.image.height);
  EXPECT_EQ(0, std::memcmp(served.data, expected.image.rgb.data(), expected.image.rgb.size()));

  const auto file = fs::temp_directory_path() / "cn_served.png";
  std::ofstream(file, std::ios::binary) << png->body;
  const auto text = io::read_png_text(file.string());
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].second, expected.parameters);
  EXPECT_NE(text[0].second.find("Seed: 7"), std::string::npos) << text[0].second;
}

// An inpaint mask as a form part gives what the library gives with the same mask file.
TEST_F(ServerTest, InpaintMaskPartGivesTheLibrarysImage) {
  const auto mask_file = fs::temp_directory_path() / "cn_server_mask.png";
  cv::Mat mask = cv::Mat::zeros(64, 64, CV_8UC3);
  mask(cv::Rect(0, 0, 32, 64)).setTo(cv::Scalar::all(255));
  io::write_png(mask_file.string(), mask);
  const json options = {{"prompt", "red circle with blue background"},
                        {"steps", 4},
                        {"seed", 3},
                        {"controls", {{{"image", "c0"}, {"mask", "m0"}}}}};
  auto res = submit(options, {{"c0", read_bytes(kControl), "circle.png", "image/png"},
                              {"m0", read_bytes(mask_file), "mask.png", "image/png"}});
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 202) << res->body;
  const auto id = json::parse(res->body)["id"].get<std::string>();
  ASSERT_EQ(wait(id)["state"], "done");
  auto png = client().Get("/api/jobs/" + id + "/images/0");
  ASSERT_TRUE(png);
  const auto served = io::decode_rgb_image(png->body, "served image");

  auto pipe = Pipeline::load({});
  GenerateOptions o = pipe->recommended_options();
  o.prompt = options["prompt"];
  o.steps = 4;
  o.seed = 3;
  ControlNetUnit unit;
  unit.model = (fs::path(default_model_dir()) / "controlnet").string();
  unit.image = kControl.string();
  unit.mask = mask_file.string();
  o.controls.push_back(unit);
  const auto expected = pipe->generate(o).at(0);
  ASSERT_EQ(served.cols, expected.image.width);
  EXPECT_EQ(0, std::memcmp(served.data, expected.image.rgb.data(), expected.image.rgb.size()));
  unit.mask.clear();
  o.controls = {unit};
  EXPECT_NE(pipe->generate(o).at(0).image.rgb, expected.image.rgb);  // the mask mattered

  res = submit({{"controls", {{{"image", "c0"}, {"mask", "m1"}}}}},
               {{"c0", read_bytes(kControl), "circle.png", "image/png"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(error_of(res).find("inpaint mask form part 'm1' is missing"), std::string::npos) << error_of(res);
}

TEST_F(ServerTest, BadRequestsGetOneClearMessage) {
  auto res = client().Post("/api/jobs", httplib::MultipartFormDataItems{{"prompt", "a form without options", "", ""}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(error_of(res).find("missing the 'options'"), std::string::npos) << res->body;

  const std::vector<std::pair<json, std::string>> cases = {
      {{{"stepz", 3}}, "unknown generation option 'stepz'"},
      {{{"steps", "many"}}, "option 'steps' has the wrong type"},
      {{{"steps", 100000}}, "steps must be at most 400"},
      {{{"width", 4096}, {"height", 4096}}, "width x height must be at most"},
      {{{"sampler", "warp_drive"}}, "warp_drive"},
      {{{"controls", {{{"image", "c0"}, {"controlnet", "nope"}}}}}, "no ControlNet named 'nope' is served (served: default)"},
      {{{"controls", {{{"image", "missing_part"}}}}}, "control image form part 'missing_part' is missing"},
      {{{"controls", {{{"image", "c0"}, {"preprocess", "telepathy"}}}}}, "unknown preprocessor 'telepathy'"},
  };
  for (const auto& [options, expected] : cases) {
    SCOPED_TRACE(options.dump());
    auto r = submit(options, {{"c0", read_bytes(kControl), "circle.png", "image/png"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_NE(error_of(r).find(expected), std::string::npos) << r->body;
  }
  auto not_an_image = submit({{"controls", {{{"image", "c0"}}}}}, {{"c0", "GIF89a garbage", "x.gif", "image/gif"}});
  ASSERT_TRUE(not_an_image);
  EXPECT_EQ(not_an_image->status, 400);
  EXPECT_NE(error_of(not_an_image).find("cannot decode image"), std::string::npos) << not_an_image->body;

  auto unknown = client().Get("/api/jobs/0123456789abcdef");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
}

TEST_F(ServerTest, QueuedAndRunningJobsCanBeCancelled) {
  const json slow = {{"prompt", "green circle"}, {"steps", 400}, {"seed", 1}};
  auto first = submit(slow), second = submit(slow);
  ASSERT_TRUE(first && second);
  ASSERT_EQ(first->status, 202);
  ASSERT_EQ(second->status, 202);
  const auto first_id = json::parse(first->body)["id"].get<std::string>();
  const auto second_id = json::parse(second->body)["id"].get<std::string>();
  EXPECT_EQ(json::parse(second->body)["state"], "queued");

  auto cancel_second = client().Delete("/api/jobs/" + second_id);
  ASSERT_TRUE(cancel_second);
  EXPECT_EQ(json::parse(cancel_second->body)["state"], "cancelled");

  // Cancel the first once it is running: it stops before its last step.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (json::parse(client().Get("/api/jobs/" + first_id)->body)["state"] == "queued" &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(client().Delete("/api/jobs/" + first_id));
  const auto status = wait(first_id);
  EXPECT_EQ(status["state"], "cancelled") << status.dump();
  EXPECT_LT(status["step"].get<int>(), 400);
  auto image = client().Get("/api/jobs/" + first_id + "/images/0");
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 409);
}

TEST_F(ServerTest, DetectAndPageAndInfo) {
  httplib::MultipartFormDataItems items = {{"image", read_bytes(kControl), "circle.png", "image/png"},
                                           {"type", "canny", "", ""},
                                           {"resolution", "128", "", ""}};
  auto res = client().Post("/api/detect", items);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const auto served = io::decode_rgb_image(res->body, "served map");
  const auto expected = preprocess::detect("canny", io::read_rgb_image(kControl.string()), {128});
  ASSERT_EQ(served.size(), expected.size());
  EXPECT_EQ(cv::norm(served, expected, cv::NORM_INF), 0);

  // sd-webui-controlnet's framing: short side 100, no x64 rounding (the default framing gives 128 x 128).
  items[2].content = "100";
  items.push_back({"framing", "padded", "", ""});
  res = client().Post("/api/detect", items);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  preprocess::DetectOptions padded{100};
  padded.framing = preprocess::Framing::padded;
  const auto padded_map = preprocess::detect("canny", io::read_rgb_image(kControl.string()), padded);
  EXPECT_EQ(padded_map.size(), cv::Size(100, 100));
  const auto served_padded = io::decode_rgb_image(res->body, "served map");
  ASSERT_EQ(served_padded.size(), padded_map.size());
  EXPECT_EQ(cv::norm(served_padded, padded_map, cv::NORM_INF), 0);
  items.pop_back();

  // The map resized to another short side, as detect() does; a dtype it does not know is refused.
  items.push_back({"output_resolution", "64", "", ""});
  res = client().Post("/api/detect", items);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  preprocess::DetectOptions resized{100};
  resized.output_resolution = 64;
  const auto resized_map = preprocess::detect("canny", io::read_rgb_image(kControl.string()), resized);
  const auto served_resized = io::decode_rgb_image(res->body, "served map");
  ASSERT_EQ(served_resized.size(), cv::Size(64, 64));
  EXPECT_EQ(cv::norm(served_resized, resized_map, cv::NORM_INF), 0);
  items.push_back({"dtype", "fp33", "", ""});
  res = client().Post("/api/detect", items);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(error_of(res).find("unknown dtype 'fp33'"), std::string::npos) << res->body;
  items.pop_back();
  items.pop_back();

  items[1].content = "telepathy";
  res = client().Post("/api/detect", items);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(error_of(res).find("unknown preprocessor 'telepathy'"), std::string::npos);

  auto page = client().Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<title>controlnet.cpp</title>"), std::string::npos);

  auto info = client().Get("/api/info");
  ASSERT_TRUE(info);
  const auto j = json::parse(info->body);
  EXPECT_EQ(j["controlnets"], json::array({"default"}));
  EXPECT_FALSE(j["model"].empty());
  // The page's sampling fields start from the model's recommended settings.
  std::ifstream settings(fs::path(default_model_dir()) / "generation.json");
  ASSERT_TRUE(settings) << "the embedded model ships its generation.json";
  const auto recommended = json::parse(settings);
  for (const auto& [key, value] : recommended.items()) EXPECT_EQ(j["recommended"][key], value) << key;
  bool canny = false;
  for (const auto& d : j["detectors"]) canny |= d["name"] == "canny" && d["available"] == true;
  EXPECT_TRUE(canny);
}

}  // namespace
