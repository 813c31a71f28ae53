#include <gtest/gtest.h>

#include "support/diffusers_folder.h"
#include "support/golden.h"
#include "io/checkpoint.h"
#include "nn/weights.h"
#include "text/clip.h"

using namespace cn;
using cn::testing::expect_golden;

TEST(ClipText, MatchesReference) {
  CN_REQUIRE_GOLDEN();
  auto cases = cn::testing::golden_cases("text_encoder");
  ASSERT_FALSE(cases.empty());
  torch::NoGradGuard no_grad;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name());
    auto model = cn::testing::load_diffusers_component<text::ClipTextModel, text::ClipTextConfig>(
        c.model("text_encoder"), "model.safetensors");
    auto ids = c.get("input_ids");
    auto out = model->forward(ids);
    const int64_t layers = model->config().num_hidden_layers;
    // The case holds the full OpenCLIP tower's states; mini-sd21's diffusers
    // folder has one layer less (diffusers drops SD2's unused last layer), so
    // its last_hidden_state is the case's penultimate conditioning. The full
    // 3-layer tower is compared when loading the LDM file (tests/io).
    for (int64_t i = 0; i <= layers; ++i)
      expect_golden(c, "hidden_states_" + std::to_string(i), out.hidden_states[i]);
    const bool full_tower = c.has("hidden_states_" + std::to_string(layers)) &&
                            !c.has("hidden_states_" + std::to_string(layers + 1));
    if (full_tower) {
      expect_golden(c, "final_layer_norm_of_last", out.last_hidden_state);
      expect_golden(c, "final_layer_norm_of_penultimate", model->encode(ids, 1));
      expect_golden(c, "pooled_output", out.pooled);
    } else {
      expect_golden(c, "final_layer_norm_of_penultimate", out.last_hidden_state);
    }
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
    nn::load_weights(*model, sd.text_encoder.weights, sd.text_encoder.source);
    auto ids = c.get("input_ids");
    auto out = model->forward(ids);
    for (size_t i = 0; i < out.hidden_states.size(); ++i)
      expect_golden(c, "hidden_states_" + std::to_string(i), out.hidden_states[i]);
    expect_golden(c, "final_layer_norm_of_last", out.last_hidden_state);
    expect_golden(c, "final_layer_norm_of_penultimate", model->encode(ids, 1));
    expect_golden(c, "pooled_output", out.pooled);
  }
}
