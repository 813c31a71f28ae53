#pragma once
// How well an image answers a fill-task condition: the disk it paints versus
// the disk the outline encloses, and whether its colours are the prompted ones.
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "controlnet/pipeline.h"

namespace cn::train {

struct FillScore {
  std::string prompt;
  double radius = 0;           // of the outlined disk, in the scored image's pixels
  double iou = 0;              // painted disk vs enclosed disk
  bool colours_right = false;  // dominant fill and background are nearest to the prompted names
  std::string fill_seen, background_seen;
};

// The circle a white outline on black draws (centre and radius in pixel
// coordinates, pixel centres at integers), fitted to the line's centre.
struct Circle {
  double cx = 0, cy = 0, r = 0;
};
Circle fit_outline_circle(const cv::Mat& outline_rgb);

// Pixels whose centres lie within the circle (255), the rest 0.
cv::Mat disk_mask(cv::Size size, const Circle& circle);

// Scores a generated RGB image for a "<fill> circle with <background> background"
// prompt against the disk the outline encloses: the disk whose boundary is the
// outline's centre line, which the dataset's targets (painted by covered area)
// match.
FillScore score_fill(const cv::Mat& generated_rgb, const cv::Mat& outline_rgb, const std::string& prompt);

// The fill task on `count` held-out conditions (a fill dataset drawn with
// `seed`, in a temporary folder): each is generated with `settings` (steps,
// sampler, CFG; the seed is the condition's index) twice, with the model's
// ControlNet (model_dir/controlnet) and without it, and scored. The
// dataset's own targets are scored too (the metric's ceiling), and so are
// the targets after an encode/decode round trip through the model's VAE
// (posterior mean): the ceiling the VAE leaves to the UNet and ControlNet.
struct FillFidelity {
  std::vector<FillScore> with_controlnet, without_controlnet, targets, vae_round_trip;  // per condition
  double vae_round_trip_error = 0;  // mean |round trip - target| over pixels and channels, in 0-255 steps
  static double mean_iou(const std::vector<FillScore>& scores);
  static double colour_accuracy(const std::vector<FillScore>& scores);
};
FillFidelity measure_fill_fidelity(Pipeline& pipeline, const std::string& model_dir, int count, uint64_t seed,
                                   const GenerateOptions& settings);

}  // namespace cn::train
