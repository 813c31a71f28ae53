#include "preprocess/preprocess.h"

#include <cfenv>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"
#include "io/pickle.h"
#include "preprocess/edges.h"
#include "preprocess/hed.h"
#include "preprocess/lineart.h"
#include "preprocess/lineart_anime.h"
#include "preprocess/midas.h"
#include "preprocess/mlsd_net.h"
#include "preprocess/model_free.h"
#include "preprocess/normalbae.h"
#include "preprocess/openpose.h"
#include "preprocess/pidinet.h"
#include "preprocess/shuffle.h"
#include "preprocess/uniformer.h"

namespace cn::preprocess {

cv::Mat hwc3(const cv::Mat& image) {
  CV_Assert(image.depth() == CV_8U);
  if (image.channels() == 3) return image;
  cv::Mat out;
  if (image.channels() == 1) {
    cv::cvtColor(image, out, cv::COLOR_GRAY2RGB);
    return out;
  }
  if (image.channels() != 4) throw Error("image with " + std::to_string(image.channels()) + " channels");
  out.create(image.rows, image.cols, CV_8UC3);
  for (int y = 0; y < image.rows; ++y)
    for (int x = 0; x < image.cols; ++x) {
      const auto p = image.at<cv::Vec4b>(y, x);
      const float alpha = float(p[3]) / 255.0f;
      for (int c = 0; c < 3; ++c) {
        // Two float32 roundings, no fused multiply-add, as numpy computes it.
        volatile float colour = float(p[c]) * alpha;
        volatile float white = 255.0f * (1.0f - alpha);
        const float v = std::clamp(colour + white, 0.0f, 255.0f);
        out.at<cv::Vec3b>(y, x)[c] = uint8_t(v);
      }
    }
  return out;
}

cv::Mat resize_image(const cv::Mat& image, int resolution) {
  const double k = double(resolution) / std::min(image.rows, image.cols);
  // numpy.round: half to even, which nearbyint does in the default rounding mode.
  const int h = int(std::nearbyint(image.rows * k / 64.0)) * 64;
  const int w = int(std::nearbyint(image.cols * k / 64.0)) * 64;
  if (h == image.rows && w == image.cols) return image.clone();
  cv::Mat out;
  cv::resize(image, out, {w, h}, 0, 0, k > 1 ? cv::INTER_LANCZOS4 : cv::INTER_AREA);
  return out;
}

PaddedImage resize_image_with_pad(const cv::Mat& image, int resolution) {
  const double k = double(resolution) / std::min(image.rows, image.cols);
  const int h = int(std::nearbyint(image.rows * k)), w = int(std::nearbyint(image.cols * k));
  cv::Mat resized;
  cv::resize(image, resized, {w, h}, 0, 0, k > 1 ? cv::INTER_CUBIC : cv::INTER_AREA);
  const auto pad = [](int size) { return (size + 63) / 64 * 64 - size; };
  PaddedImage out;
  cv::copyMakeBorder(resized, out.image, 0, pad(h), 0, pad(w), cv::BORDER_REPLICATE);
  out.content = {w, h};
  return out;
}

Framing parse_framing(const std::string& name) {
  for (auto f : {Framing::resize_image, Framing::padded, Framing::original})
    if (name == to_string(f)) return f;
  throw Error("unknown framing '" + name + "' (resize_image, padded or original)");
}

std::string to_string(Framing framing) {
  switch (framing) {
    case Framing::resize_image: return "resize_image";
    case Framing::padded: return "padded";
    case Framing::original: return "original";
  }
  return "?";
}

namespace {
const char* const kMidasCheckpoint = "dpt_hybrid-midas-501f0c75.pt";
const char* const kHedCheckpoint = "ControlNetHED.pth";
const char* const kPidinetCheckpoint = "table5_pidinet.pth";

cv::Mat hed_of(const cv::Mat& rgb, const DetectParams& p, bool safe) {
  auto model = hed_from_file(annotator_file(kHedCheckpoint, p.annotator_dir), p.dtype);
  return hed_detect(model, rgb, safe);
}

cv::Mat pidinet_of(const cv::Mat& rgb, const DetectParams& p, bool safe) {
  auto model = pidinet_from_file(annotator_file(kPidinetCheckpoint, p.annotator_dir), p.dtype);
  return pidinet_detect(model, rgb, safe);
}

// OpenPose with the parts asked for: the hand and face networks are loaded
// (and their files required) only when those parts are.
cv::Mat openpose_of(const cv::Mat& rgb, const DetectParams& p, const PoseDrawOptions& parts) {
  const auto file = [&](bool needed, const char* name) {
    return needed ? annotator_file(name, p.annotator_dir) : std::filesystem::path();
  };
  const auto nets = openpose_networks_from_files(file(true, "body_pose_model.pth"),
                                                 file(parts.hands, "hand_pose_model.pth"),
                                                 file(parts.faces, "facenet.pth"), p.dtype);
  const auto detection = detect_openpose(rgb, nets, parts.hands, parts.faces);
  if (p.pose_json) p.pose_json(openpose_keypoints_json(detection).dump());
  return draw_pose(detection.pose, detection.height, detection.width, parts);
}

// sd-webui-controlnet's scribble_hed / scribble_pidinet: the demo's fake
// scribble of the soft edges, at the detect resolution.
cv::Mat scribble_of(const cv::Mat& soft_edge) { return fake_scribble(soft_edge, soft_edge.size()).map; }
}  // namespace

const std::vector<Detector>& detectors() {
  static const std::vector<Detector> all = {
      {"canny", "Canny edges (OpenCV, on the RGB image)", "low threshold", "high threshold", 100, 200, "",
       [](const cv::Mat& rgb, const DetectParams& p) {
         cv::Mat edges;
         cv::Canny(rgb, edges, p.a, p.b);
         return edges;
       }},
      {"binary", "gray image thresholded and inverted: dark -> white (sd-webui-controlnet's annotator/binary)",
       "threshold (0 or 255 = Otsu)", "", 0, 0, "",
       [](const cv::Mat& rgb, const DetectParams& p) { return binary_map(rgb, p.a); }, Framing::padded},
      {"threshold", "white where every channel is above the threshold (sd-webui-controlnet)", "threshold", "", 127, 0,
       "", [](const cv::Mat& rgb, const DetectParams& p) { return threshold_map(rgb, p.a); }, Framing::padded},
      {"lineart_standard", "line art from the difference to a Gaussian blur, white lines on black (no network)",
       "Gaussian sigma", "intensity threshold", 6, 8, "",
       [](const cv::Mat& rgb, const DetectParams& p) { return lineart_standard(rgb, p.a, p.b); }, Framing::padded},
      {"scribble_xdog", "scribble from a difference of Gaussians (XDoG), white strokes on black", "XDoG threshold", "",
       32, 0, "", [](const cv::Mat& rgb, const DetectParams& p) { return scribble_xdog(rgb, p.a); },
       Framing::padded},
      {"tile_resample", "the image itself, down-sampled by a rate for the tile model (the resolution is not used)",
       "down-sampling rate", "", 1, 0, "",
       [](const cv::Mat& rgb, const DetectParams& p) { return tile_resample(rgb, p.a); }, Framing::original},
      {"shuffle", "content shuffle: the image warped by a smooth random flow (numpy's draws for the seed)", "seed", "",
       0, 0, "",
       [](const cv::Mat& rgb, const DetectParams& p) {
         return content_shuffle(rgb, rgb.rows, rgb.cols, uint32_t(p.a));
       }},
      {"scribble", "a user's scribble (dark strokes on white) to white strokes on black", "", "", 0, 0, "",
       [](const cv::Mat& rgb, const DetectParams&) {
         std::vector<cv::Mat> channels;
         cv::split(rgb, channels);
         cv::Mat darkest = cv::min(cv::min(channels[0], channels[1]), channels[2]);
         cv::Mat out = cv::Mat::zeros(rgb.size(), CV_8U);
         out.setTo(255, darkest < 127);
         return out;
       }},
      {"mlsd", "M-LSD straight line segments, white on black (ControlNet 1.1 mlsd)", "score threshold",
       "distance threshold", 0.1, 0.1, "mlsd_large_512_fp32.pth",
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = mlsd_from_file(annotator_file("mlsd_large_512_fp32.pth", p.annotator_dir), p.dtype);
         return mlsd_detect(model, rgb, p.a, p.b);
       }},
      {"depth_midas", "MiDaS DPT-Hybrid depth (ControlNet 1.1 depth)", "", "", 0, 0, kMidasCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = dpt_hybrid_from_file(annotator_file(kMidasCheckpoint, p.annotator_dir), p.dtype);
         return midas_depth_map(midas_raw_depth(model, rgb));
       }},
      {"normal_midas", "normal map from MiDaS depth (ControlNet 1.0 normal; Sobel of the depth, z = 2 pi)",
       "background threshold", "", 0.4, 0, kMidasCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = dpt_hybrid_from_file(annotator_file(kMidasCheckpoint, p.annotator_dir), p.dtype);
         // The 1.0 demo reverses the annotator's (x, y, z) channels before
         // control_sd15_normal sees them (as sd-webui-controlnet does): the
         // map is returned ready to be the control image.
         cv::Mat control;
         cv::cvtColor(midas_normal_map_v10(midas_raw_depth(model, rgb), 2 * M_PI, p.a), control, cv::COLOR_RGB2BGR);
         return control;
       }},
      {"normal_bae", "Normal-BAE surface normals (ControlNet 1.1 normalbae)", "", "", 0, 0, "scannet.pt",
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = normal_bae_from_file(annotator_file("scannet.pt", p.annotator_dir), p.dtype);
         return normal_bae_detect(model, rgb);
       }},
      {"seg_ufade20k",
       "ADE20K segmentation in the ADE20K palette, UniFormer-S + UperNet (ControlNet 1.0 seg, 1.1 seg_ufade20k)", "",
       "", 0, 0, "upernet_global_small.pth",
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = uniformer_from_file(annotator_file("upernet_global_small.pth", p.annotator_dir), p.dtype);
         return uniformer_detect(model, rgb);
       }},
      {"lineart_realistic", "line art (ControlNet 1.1 lineart; white lines on black, as the model takes it)", "", "",
       0, 0, "sk_model.pth",
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = lineart_from_file(annotator_file("sk_model.pth", p.annotator_dir), p.dtype);
         return cv::Mat(255 - lineart_map(model, rgb));  // the 1.1 demo's control is 1 - map / 255
       }},
      {"lineart_coarse", "coarse line art (ControlNet 1.1 lineart; white lines on black)", "", "", 0, 0,
       "sk_model2.pth",
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = lineart_from_file(annotator_file("sk_model2.pth", p.annotator_dir), p.dtype);
         return cv::Mat(255 - lineart_map(model, rgb));
       }},
      {"lineart_anime", "anime line art (ControlNet 1.1 lineart_anime, Anime2Sketch; white lines on black)", "", "", 0,
       0, "netG.pth",
       [](const cv::Mat& rgb, const DetectParams& p) {
         auto model = lineart_anime_from_file(annotator_file("netG.pth", p.annotator_dir), p.dtype);
         return cv::Mat(255 - lineart_anime_detect(model, rgb));  // the demo's control is 1 - map / 255
       }},
      {"openpose", "OpenPose body keypoints drawn as limbs and joints (ControlNet 1.1 openpose)", "", "", 0, 0,
       "body_pose_model.pth",
       [](const cv::Mat& rgb, const DetectParams& p) { return openpose_of(rgb, p, {true, false, false}); }},
      {"openpose_hand", "OpenPose body and hands (also needs hand_pose_model.pth)", "", "", 0, 0,
       "body_pose_model.pth",
       [](const cv::Mat& rgb, const DetectParams& p) { return openpose_of(rgb, p, {true, true, false}); }},
      {"openpose_face", "OpenPose body and face landmarks (also needs facenet.pth)", "", "", 0, 0,
       "body_pose_model.pth",
       [](const cv::Mat& rgb, const DetectParams& p) { return openpose_of(rgb, p, {true, false, true}); }},
      {"openpose_faceonly", "OpenPose face landmarks only, found from the body (also needs facenet.pth)", "", "", 0,
       0, "body_pose_model.pth",
       [](const cv::Mat& rgb, const DetectParams& p) { return openpose_of(rgb, p, {false, false, true}); }},
      {"openpose_full",
       "OpenPose body, hands and face (ControlNet 1.1 Openpose_Full; also needs hand_pose_model.pth and facenet.pth)",
       "", "", 0, 0, "body_pose_model.pth",
       [](const cv::Mat& rgb, const DetectParams& p) { return openpose_of(rgb, p, {true, true, true}); }},
      {"softedge_hed", "HED soft edges (ControlNet 1.1 softedge)", "", "", 0, 0, kHedCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) { return hed_of(rgb, p, false); }},
      {"softedge_hedsafe", "HED soft edges quantised to a few levels (safe_step)", "", "", 0, 0, kHedCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) { return hed_of(rgb, p, true); }},
      {"softedge_pidinet", "PiDiNet soft edges (ControlNet 1.1 softedge)", "", "", 0, 0, kPidinetCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) { return pidinet_of(rgb, p, false); }},
      {"softedge_pidisafe", "PiDiNet soft edges quantised to a few levels (safe_step)", "", "", 0, 0, kPidinetCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) { return pidinet_of(rgb, p, true); }},
      {"scribble_hed", "fake scribble from HED soft edges (nms, blur, threshold)", "", "", 0, 0, kHedCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) { return scribble_of(hed_of(rgb, p, false)); }},
      {"scribble_pidinet", "fake scribble from PiDiNet soft edges (nms, blur, threshold)", "", "", 0, 0, kPidinetCheckpoint,
       [](const cv::Mat& rgb, const DetectParams& p) { return scribble_of(pidinet_of(rgb, p, false)); }},
  };
  return all;
}

const Detector& find_detector(const std::string& name) {
  for (const auto& d : detectors())
    if (d.name == name) return d;
  std::string valid;
  for (const auto& d : detectors()) valid += (valid.empty() ? "" : ", ") + d.name;
  throw Error("unknown preprocessor '" + name + "' (available: " + valid + ")");
}

int pixel_perfect_resolution(cv::Size image, int target_width, int target_height, bool fit_inside) {
  const double by_height = double(target_height) / image.height, by_width = double(target_width) / image.width;
  const double k = fit_inside ? std::min(by_height, by_width) : std::max(by_height, by_width);
  return int(std::nearbyint(k * std::min(image.height, image.width)));  // numpy.round: half to even
}

cv::Mat detect(const std::string& type, const cv::Mat& image, const DetectOptions& options) {
  const auto& d = find_detector(type);
  if (options.resolution < 64 || options.resolution > 4096) throw Error("detect resolution must be in 64..4096");
  if (options.output_resolution != 0 && (options.output_resolution < 64 || options.output_resolution > 8192))
    throw Error("output resolution must be in 64..8192 (or 0: the detect resolution)");
  DetectParams params;
  params.a = options.threshold_a < 0 ? d.default_a : options.threshold_a;
  params.b = options.threshold_b < 0 ? d.default_b : options.threshold_b;
  params.annotator_dir = options.annotator_dir;
  params.pose_json = options.pose_json;
  params.dtype = options.dtype;
  const auto rgb = hwc3(image);
  const cv::Mat map = [&] {
    switch (options.framing.value_or(d.framing)) {
      case Framing::resize_image: return hwc3(d.run(resize_image(rgb, options.resolution), params));
      case Framing::original: return hwc3(d.run(rgb, params));
      case Framing::padded: {
        const auto padded = resize_image_with_pad(rgb, options.resolution);
        const cv::Mat map = d.run(padded.image, params);
        return hwc3(map(cv::Rect({0, 0}, padded.content)).clone());
      }
    }
    throw Error("unknown framing");
  }();
  if (options.output_resolution == 0) return map;
  const double k = double(options.output_resolution) / std::min(map.rows, map.cols);
  cv::Mat out;
  cv::resize(map, out, {int(std::lround(map.cols * k)), int(std::lround(map.rows * k))}, 0, 0,
             k > 1 ? cv::INTER_LANCZOS4 : cv::INTER_AREA);
  return out;
}

namespace {

std::filesystem::path annotator_search_dir(const std::string& annotator_dir) {
  if (!annotator_dir.empty()) return annotator_dir;
  const char* env = std::getenv("CONTROLNET_ANNOTATOR_DIR");
  return env ? env : "";
}

std::filesystem::path find_annotator_file(const std::string& filename, const std::string& annotator_dir) {
  const auto dir = annotator_search_dir(annotator_dir);
  if (dir.empty()) return {};
  for (auto candidate : {dir / filename, (dir / filename).replace_extension(".safetensors")})
    if (std::filesystem::is_regular_file(candidate)) return candidate;
  return {};
}

}  // namespace

bool annotator_file_present(const std::string& filename, const std::string& annotator_dir) {
  return !find_annotator_file(filename, annotator_dir).empty();
}

std::filesystem::path annotator_file(const std::string& filename, const std::string& annotator_dir) {
  auto found = find_annotator_file(filename, annotator_dir);
  if (!found.empty()) return found;
  const auto dir = annotator_search_dir(annotator_dir);
  throw Error("annotator checkpoint " + filename + " not found" +
              (dir.empty() ? std::string(" (no --annotator-dir given and CONTROLNET_ANNOTATOR_DIR is not set)")
                           : " in " + dir.string()) +
              ": download https://huggingface.co/lllyasviel/Annotators/resolve/main/" + filename +
              " and put it in the folder given by --annotator-dir or CONTROLNET_ANNOTATOR_DIR");
}

torch::ScalarType network_dtype(const torch::nn::Module& network) {
  const auto parameters = network.parameters();
  return parameters.empty() ? torch::kFloat32 : parameters.front().scalar_type();
}

io::TensorMap load_annotator_weights(const std::filesystem::path& path, const std::vector<std::string>& strip_prefixes) {
  io::TensorMap raw = path.extension() == ".safetensors" ? io::load_safetensors(path.string())
                                                         : io::load_torch_checkpoint(path.string());
  io::TensorMap out;
  for (auto& [name, tensor] : raw) {
    std::string key = name;
    for (const auto& prefix : strip_prefixes)
      if (key.rfind(prefix, 0) == 0) key.erase(0, prefix.size());
    out[key] = tensor;
  }
  return out;
}

}  // namespace cn::preprocess
