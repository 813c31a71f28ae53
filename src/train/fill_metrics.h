#pragma once
// How well an image answers a fill-task condition: the disk it paints versus
// the disk the outline encloses, and whether its colours are the prompted ones.
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "controlnet/pipeline.h"

namespace cn::train {

struct FillScore {
  double iou = 0;              // painted disk vs enclosed disk
  bool colours_right = false;  // dominant fill and background are nearest to the prompted names
  std::string fill_seen, background_seen;
};

// The disk enclosed by a white outline on black (outline included), as a mask.
cv::Mat disk_from_outline(const cv::Mat& outline_rgb);

// Scores a generated RGB image for a "<fill> circle with <background> background" prompt.
FillScore score_fill(const cv::Mat& generated_rgb, const cv::Mat& outline_rgb, const std::string& prompt);

// The fill task on `count` held-out conditions (a fill dataset drawn with
// `seed`, in a temporary folder): each is generated with `settings` (steps,
// sampler, CFG; the seed is the condition's index) twice, with the model's
// ControlNet (model_dir/controlnet) and without it, and scored.
struct FillFidelity {
  std::vector<FillScore> with_controlnet, without_controlnet;  // per condition
  static double mean_iou(const std::vector<FillScore>& scores);
  static double colour_accuracy(const std::vector<FillScore>& scores);
};
FillFidelity measure_fill_fidelity(Pipeline& pipeline, const std::string& model_dir, int count, uint64_t seed,
                                   const GenerateOptions& settings);

}  // namespace cn::train
