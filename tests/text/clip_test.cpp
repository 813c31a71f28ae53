#include <gtest/gtest.h>

#include "support/diffusers_folder.h"
#include "support/golden.h"
#include "io/checkpoint.h"
#include "nn/weights.h"
#include "text/clip.h"

#include "controlnet/error.h"

using namespace cn;
using cn::testing::expect_golden;

namespace {

text::ClipTextModel golden_model(const cn::testing::GoldenCase& c) {
  return cn::testing::load_diffusers_component<text::ClipTextModel, text::ClipTextConfig>(c.model("text_encoder"),
                                                                                          "model.safetensors");
}

// The outputs only a tower holding all of the case's layers can produce.
void expect_full_tower_outputs(const cn::testing::GoldenCase& c, text::ClipTextModel& model, const torch::Tensor& ids,
                               const text::ClipTextOutput& out) {
  expect_golden(c, "final_layer_norm_of_last", out.last_hidden_state);
  expect_golden(c, "final_layer_norm_of_penultimate", model->encode(ids, 1));
  expect_golden(c, "pooled_output", out.pooled);
}

// Every layer's states, and the outputs the tower's depth allows: the case
// holds the full OpenCLIP tower's states, while SD2 models (diffusers folder
// and LDM file alike) drop its unused last layer, so their last_hidden_state
// is the case's penultimate conditioning.
void expect_case_outputs(const cn::testing::GoldenCase& c, text::ClipTextModel& model) {
  auto ids = c.get("input_ids");
  auto out = model->forward(ids);
  const int64_t layers = model->config().num_hidden_layers;
  for (int64_t i = 0; i <= layers; ++i) expect_golden(c, "hidden_states_" + std::to_string(i), out.hidden_states[i]);
  const bool full_tower =
      c.has("hidden_states_" + std::to_string(layers)) && !c.has("hidden_states_" + std::to_string(layers + 1));
  if (full_tower) expect_full_tower_outputs(c, model, ids, out);
  else expect_golden(c, "final_layer_norm_of_penultimate", out.last_hidden_state);
}

}  // namespace

TEST(ClipText, MatchesReference) {
  CN_REQUIRE_GOLDEN();
  auto cases = cn::testing::golden_cases("text_encoder");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    auto model = golden_model(c);
    expect_case_outputs(c, model);
  }
}

// The LDM files hold the whole tower (SD2: OpenCLIP with fused q/k/v and its
// unused last layer), so every tensor of the case is comparable.
TEST(ClipText, LdmCheckpointMatchesReference) {
  CN_REQUIRE_GOLDEN();
  auto cases = cn::testing::golden_cases("text_encoder");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    const auto sd = io::load_sd_model(c.model("ldm_checkpoint").string());
    text::ClipTextModel model(text::ClipTextConfig::from_json(sd.text_encoder.config));
    model->load_weights(sd.text_encoder.weights, sd.text_encoder.source);
    expect_case_outputs(c, model);
  }
}

// bfloat16 weights and activations (8-bit mantissa) stay close to float32:
// states are O(1..4) and one bf16 rounding is 2^-8 relative, so the error
// after a few layers should be a few ulps of the largest value (measured about
// 2% of it); 5% leaves margin while still catching a wrong dtype path.
TEST(ClipText, Bfloat16IsCloseToFloat32) {
  CN_REQUIRE_GOLDEN();
  auto cases = cn::testing::golden_cases("text_encoder");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    auto model = golden_model(c);
    const auto ids = c.get("input_ids");
    const auto fp32 = model->forward(ids);
    model->to(torch::kBFloat16);
    const auto bf16 = model->forward(ids);
    ASSERT_EQ(bf16.last_hidden_state.scalar_type(), torch::kBFloat16);
    const double scale = fp32.last_hidden_state.abs().max().item<double>();
    const double err = cn::testing::max_abs_diff(bf16.last_hidden_state, fp32.last_hidden_state);
    const double pooled_err = cn::testing::max_abs_diff(bf16.pooled, fp32.pooled);
    std::printf("[bf16] %s last_hidden_state max_abs=%.3e (max |value| %.2f) pooled max_abs=%.3e\n", c.name().c_str(),
                err, scale, pooled_err);
    EXPECT_LE(err, 0.05 * scale);
    EXPECT_LE(pooled_err, 0.05 * scale);
    EXPECT_GT(err, 0.0) << "the bf16 run should not be the float32 one";
  }
}

// Older transformers versions save the int64 buffer
// text_model.embeddings.position_ids; it is accepted and ignored, while any
// other unknown tensor is still refused.
TEST(ClipText, PositionIdsBufferIsIgnored) {
  CN_REQUIRE_GOLDEN();
  auto cases = cn::testing::golden_cases("text_encoder");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  const auto& c = cases.front();
  auto reference = golden_model(c);
  auto weights = io::load_safetensors((c.model("text_encoder") / "model.safetensors").string());
  weights["text_model.embeddings.position_ids"] = torch::arange(reference->config().max_position_embeddings).unsqueeze(0);
  text::ClipTextModel model(reference->config());
  model->load_weights(weights, "with position_ids");
  const auto ids = c.get("input_ids");
  EXPECT_TRUE(model->forward(ids).last_hidden_state.equal(reference->forward(ids).last_hidden_state));

  weights["text_model.embeddings.unexpected"] = torch::zeros({1});
  try {
    model->load_weights(weights, "with an unknown tensor");
    FAIL() << "expected cn::Error";
  } catch (const cn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("text_model.embeddings.unexpected"), std::string::npos) << e.what();
  }
}

TEST(ClipText, ConfigAndArgumentsAreChecked) {
  auto j = text::ClipTextConfig().to_json();
  EXPECT_FALSE(j.contains("projection_dim"));
  j["projection_dim"] = 512;
  j["hidden_size"] = 64;
  j["num_attention_heads"] = 4;
  j["intermediate_size"] = 128;
  j["num_hidden_layers"] = 2;
  const auto config = text::ClipTextConfig::from_json(j);
  EXPECT_EQ(config.projection_dim, 512);
  EXPECT_EQ(text::ClipTextConfig::from_json(config.to_json()).to_json(), config.to_json());

  j["hidden_act"] = "relu";
  EXPECT_THROW(text::ClipTextConfig::from_json(j), cn::Error);

  text::ClipTextModel model(config);
  const auto ids = torch::zeros({1, 77}, torch::kLong);
  EXPECT_THROW(model->encode(ids, 2), cn::Error);  // would leave no layer
  EXPECT_THROW(model->forward(torch::zeros({1, 78}, torch::kLong)), cn::Error);
  EXPECT_THROW(model->forward(torch::zeros({1, 77}, torch::kFloat)), cn::Error);
  torch::NoGradGuard no_grad;
  const auto out = model->forward(ids);
  EXPECT_EQ(out.hidden_states.size(), 3u);
  auto* final_layer_norm = model->named_modules()["text_model.final_layer_norm"]->as<torch::nn::LayerNorm>();
  EXPECT_TRUE(model->encode(ids, 1).equal(final_layer_norm->forward(out.hidden_states[1])));
}
