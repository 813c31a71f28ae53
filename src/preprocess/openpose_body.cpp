#include "preprocess/openpose_body.h"

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "preprocess/openpose_util.h"

namespace cn::preprocess {
namespace {

using namespace openpose_detail;

constexpr double kBoxSize = 368.0, kScale = 0.5;
constexpr int kStride = 8, kPadValue = 128;
constexpr double kPeakThreshold = 0.1, kPafThreshold = 0.05;
constexpr int kParts = 18, kLimbCount = 19, kPafSamples = 10;

// Parts numbered 1..18 (the reference's limbSeq) and the PAF channels of each
// limb (its mapIdx minus 19).
constexpr std::array<std::array<int, 2>, kLimbCount> kLimbs = {{{2, 3},   {2, 6},   {3, 4},   {4, 5},   {6, 7},
                                                                {7, 8},   {2, 9},   {9, 10},  {10, 11}, {2, 12},
                                                                {12, 13}, {13, 14}, {2, 1},   {1, 15},  {15, 17},
                                                                {1, 16},  {16, 18}, {3, 17},  {6, 18}}};
constexpr std::array<std::array<int, 2>, kLimbCount> kPafChannels = {
    {{12, 13}, {20, 21}, {14, 15}, {16, 17}, {22, 23}, {24, 25}, {0, 1},   {2, 3},   {4, 5},   {6, 7},
     {8, 9},   {10, 11}, {28, 29}, {30, 31}, {34, 35}, {32, 33}, {36, 37}, {18, 19}, {26, 27}}};

cv::Size truncated_size(int height, int width, double f) {
  return cv::Size(int(double(width) * f), int(double(height) * f));
}

// One output channel back to the image: x8, crop the padding, resize to the
// image; as float64 (the reference accumulates into a float64 average).
cv::Mat channel_to_image(const torch::Tensor& maps, int64_t channel, cv::Size unpadded, cv::Size image) {
  cv::Mat full = smart_resize_k(output_channel(maps, channel), kStride)(cv::Rect(0, 0, unpadded.width, unpadded.height));
  cv::Mat out;
  smart_resize(full.clone(), image).convertTo(out, CV_64F);
  return out;
}

struct Peak {
  double x, y, score;
  int id;
};

// Local maxima of the smoothed map (>= its 4 neighbours, outside counts as 0)
// above the threshold, in row-major order, scored on the unsmoothed map.
std::vector<Peak> find_peaks(const cv::Mat& map, int& next_id) {
  const cv::Mat smooth = gaussian_filter_sigma3(map);
  std::vector<Peak> peaks;
  const auto at = [&](int r, int c) { return r < 0 || c < 0 || r >= smooth.rows || c >= smooth.cols ? 0.0 : smooth.at<double>(r, c); };
  for (int r = 0; r < smooth.rows; ++r)
    for (int c = 0; c < smooth.cols; ++c) {
      const double v = smooth.at<double>(r, c);
      if (v >= at(r - 1, c) && v >= at(r + 1, c) && v >= at(r, c - 1) && v >= at(r, c + 1) && v > kPeakThreshold)
        peaks.push_back({double(c), double(r), map.at<double>(r, c), next_id++});
    }
  return peaks;
}

// np.linspace(a, b, n): i * step + a, the last sample exactly b.
std::vector<double> linspace(double a, double b, int n) {
  std::vector<double> v(static_cast<size_t>(n), 0.0);
  const double step = (b - a) / double(n - 1);
  for (int i = 0; i < n; ++i) v[size_t(i)] = (step == 0 ? (double(i) / double(n - 1)) * (b - a) : double(i) * step) + a;
  v[size_t(n - 1)] = b;
  return v;
}

struct Connection {
  int id_a, id_b;
  double score;
  int i, j;
};

}  // namespace

cv::Size body_net_unpadded_size(int height, int width) {
  return truncated_size(height, width, kScale * kBoxSize / double(height));
}

torch::Tensor body_net_input(const cv::Mat& bgr) {
  return bgr_to_net_input(pad_right_down(smart_resize_k(bgr, kScale * kBoxSize / double(bgr.rows)), kStride, kPadValue));
}

BodyDecoding decode_body(const torch::Tensor& pafs, const torch::Tensor& heatmaps, int height, int width) {
  const cv::Size image(width, height), unpadded = body_net_unpadded_size(height, width);

  std::vector<std::vector<Peak>> peaks(kParts);
  int next_id = 0;
  for (int part = 0; part < kParts; ++part)
    peaks[size_t(part)] = find_peaks(channel_to_image(heatmaps, part, unpadded, image), next_id);

  BodyDecoding result;
  for (const auto& part : peaks)
    for (const auto& p : part) result.candidate.push_back({p.x, p.y, p.score, double(p.id)});

  std::vector<std::vector<Connection>> connections(kLimbCount);
  std::vector<bool> limb_missing(kLimbCount, false);
  for (int k = 0; k < kLimbCount; ++k) {
    const auto& cand_a = peaks[size_t(kLimbs[k][0] - 1)];
    const auto& cand_b = peaks[size_t(kLimbs[k][1] - 1)];
    if (cand_a.empty() || cand_b.empty()) {
      limb_missing[size_t(k)] = true;
      continue;
    }
    const cv::Mat paf_x = channel_to_image(pafs, kPafChannels[k][0], unpadded, image);
    const cv::Mat paf_y = channel_to_image(pafs, kPafChannels[k][1], unpadded, image);
    struct Candidate {
      int i, j;
      double score;
    };
    std::vector<Candidate> found;
    for (int i = 0; i < int(cand_a.size()); ++i)
      for (int j = 0; j < int(cand_b.size()); ++j) {
        const auto& a = cand_a[size_t(i)];
        const auto& b = cand_b[size_t(j)];
        double vx = b.x - a.x, vy = b.y - a.y;
        const double norm = std::max(0.001, std::sqrt(vx * vx + vy * vy));
        vx /= norm;
        vy /= norm;
        const auto xs = linspace(a.x, b.x, kPafSamples), ys = linspace(a.y, b.y, kPafSamples);
        std::vector<double> along(kPafSamples);
        int above = 0;
        for (int s = 0; s < kPafSamples; ++s) {
          const int r = int(std::nearbyint(ys[size_t(s)])), c = int(std::nearbyint(xs[size_t(s)]));
          along[size_t(s)] = paf_x.at<double>(r, c) * vx + paf_y.at<double>(r, c) * vy;
          if (along[size_t(s)] > kPafThreshold) ++above;
        }
        // Python's builtin sum: sequential from 0.
        double along_sum = 0.0;
        for (double v : along) along_sum += v;
        const double score = along_sum / kPafSamples + std::min(0.5 * height / norm - 1.0, 0.0);
        if (above > 0.8 * kPafSamples && score > 0) found.push_back({i, j, score});
      }
    std::stable_sort(found.begin(), found.end(), [](const Candidate& l, const Candidate& r) { return l.score > r.score; });
    auto& chosen = connections[size_t(k)];
    for (const auto& c : found) {
      const bool used = std::any_of(chosen.begin(), chosen.end(),
                                    [&](const Connection& x) { return x.i == c.i || x.j == c.j; });
      if (used) continue;
      chosen.push_back({cand_a[size_t(c.i)].id, cand_b[size_t(c.j)].id, c.score, c.i, c.j});
      if (chosen.size() >= std::min(cand_a.size(), cand_b.size())) break;
    }
  }

  auto& subset = result.subset;
  const auto part_score = [&](int id) { return result.candidate[size_t(id)][2]; };
  for (int k = 0; k < kLimbCount; ++k) {
    if (limb_missing[size_t(k)]) continue;
    const int index_a = kLimbs[k][0] - 1, index_b = kLimbs[k][1] - 1;
    for (const auto& c : connections[size_t(k)]) {
      std::vector<size_t> owners;
      for (size_t j = 0; j < subset.size(); ++j)
        if (subset[j][size_t(index_a)] == c.id_a || subset[j][size_t(index_b)] == c.id_b) owners.push_back(j);
      if (owners.size() == 1) {
        auto& person = subset[owners[0]];
        if (person[size_t(index_b)] != c.id_b) {
          person[size_t(index_b)] = c.id_b;
          person[19] += 1;
          person[18] += part_score(c.id_b) + c.score;
        }
      } else if (owners.size() == 2) {
        auto& p1 = subset[owners[0]];
        const auto p2 = subset[owners[1]];
        bool overlap = false;
        for (int part = 0; part < kParts; ++part) overlap |= p1[size_t(part)] >= 0 && p2[size_t(part)] >= 0;
        if (!overlap) {
          for (int part = 0; part < kParts; ++part) p1[size_t(part)] += p2[size_t(part)] + 1;
          p1[18] += p2[18];
          p1[19] += p2[19];
          p1[18] += c.score;
          subset.erase(subset.begin() + std::ptrdiff_t(owners[1]));
        } else {
          p1[size_t(index_b)] = c.id_b;
          p1[19] += 1;
          p1[18] += part_score(c.id_b) + c.score;
        }
      } else if (owners.empty() && k < 17) {
        std::vector<double> row(20, -1.0);
        row[size_t(index_a)] = c.id_a;
        row[size_t(index_b)] = c.id_b;
        row[19] = 2;
        row[18] = (part_score(c.id_a) + part_score(c.id_b)) + c.score;
        subset.push_back(row);
      }
    }
  }
  subset.erase(std::remove_if(subset.begin(), subset.end(),
                              [](const std::vector<double>& p) { return p[19] < 4 || p[18] / p[19] < 0.4; }),
               subset.end());
  return result;
}

}  // namespace cn::preprocess
