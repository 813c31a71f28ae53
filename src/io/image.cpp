#include "io/image.h"

#include <png.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "controlnet/error.h"

namespace cn::io {

namespace {

// An image as OpenCV decoded it (BGR, gray, BGRA; 8 or 16 bit) as 8-bit RGB.
cv::Mat to_rgb(cv::Mat raw, const std::string& what) {
  if (raw.depth() == CV_16U) raw.convertTo(raw, CV_8U, 1.0 / 257.0);
  if (raw.depth() != CV_8U) throw cn::Error(what + ": unsupported image depth (expected 8 or 16 bit)");
  cv::Mat rgb;
  switch (raw.channels()) {
    case 1:
      cv::cvtColor(raw, rgb, cv::COLOR_GRAY2RGB);
      break;
    case 3:
      cv::cvtColor(raw, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4: {
      // Transparent pixels become white, as the reference annotators' HWC3 does.
      cv::Mat bgra;
      raw.convertTo(bgra, CV_32F);
      std::vector<cv::Mat> ch;
      cv::split(bgra, ch);
      cv::Mat alpha = ch[3] / 255.0f;
      cv::Mat out_ch[3];
      for (int c = 0; c < 3; ++c) out_ch[2 - c] = ch[c].mul(alpha) + 255.0f * (1.0f - alpha);
      cv::Mat merged;
      cv::merge(out_ch, 3, merged);
      merged.convertTo(rgb, CV_8U);  // saturating round to nearest
      break;
    }
    default:
      throw cn::Error(what + ": unsupported number of channels " + std::to_string(raw.channels()));
  }
  return rgb;
}

}  // namespace

cv::Mat read_rgb_image(const std::string& path) {
  cv::Mat raw = cv::imread(path, cv::IMREAD_UNCHANGED);
  if (raw.empty()) throw cn::Error(path + ": cannot read image (missing file or unsupported format)");
  return to_rgb(raw, path);
}

cv::Mat decode_rgb_image(const std::string& bytes, const std::string& what) {
  cv::Mat raw;
  if (!bytes.empty())
    raw = cv::imdecode(cv::Mat(1, int(bytes.size()), CV_8U, const_cast<char*>(bytes.data())), cv::IMREAD_UNCHANGED);
  if (raw.empty()) throw cn::Error(what + ": cannot decode image (empty or unsupported format)");
  return to_rgb(raw, what);
}

ResizeMode parse_resize_mode(const std::string& name) {
  if (name == "just-resize" || name == "just_resize" || name == "resize") return ResizeMode::just_resize;
  if (name == "crop-and-resize" || name == "crop_and_resize" || name == "crop") return ResizeMode::crop_and_resize;
  if (name == "resize-and-fill" || name == "resize_and_fill" || name == "fill") return ResizeMode::resize_and_fill;
  throw cn::Error("unknown resize mode '" + name + "' (valid: just-resize, crop-and-resize, resize-and-fill)");
}

namespace {
cv::Mat resize_to(const cv::Mat& img, int width, int height) {
  if (img.cols == width && img.rows == height) return img.clone();
  cv::Mat out;
  // Area averaging when shrinking avoids aliasing thin control lines; cubic when enlarging.
  const bool shrinking = width * height < img.cols * img.rows;
  cv::resize(img, out, cv::Size(width, height), 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_CUBIC);
  return out;
}
}  // namespace

cv::Mat fit_image(const cv::Mat& rgb, int width, int height, ResizeMode mode) {
  if (mode == ResizeMode::just_resize) return resize_to(rgb, width, height);
  const double sx = double(width) / rgb.cols, sy = double(height) / rgb.rows;
  const double s = mode == ResizeMode::crop_and_resize ? std::max(sx, sy) : std::min(sx, sy);
  const int w = std::max(1, int(std::lround(rgb.cols * s)));
  const int h = std::max(1, int(std::lround(rgb.rows * s)));
  cv::Mat scaled = resize_to(rgb, w, h);
  if (mode == ResizeMode::crop_and_resize) {
    const int x = (w - width) / 2, y = (h - height) / 2;
    return scaled(cv::Rect(x, y, width, height)).clone();
  }
  cv::Mat out(height, width, rgb.type(), cv::Scalar::all(0));
  scaled.copyTo(out(cv::Rect((width - w) / 2, (height - h) / 2, w, h)));
  return out;
}

torch::Tensor image_to_tensor(const cv::Mat& rgb) {
  cv::Mat contiguous = rgb.isContinuous() ? rgb : rgb.clone();
  auto hwc = torch::from_blob(contiguous.data, {contiguous.rows, contiguous.cols, contiguous.channels()},
                              torch::kUInt8);
  return hwc.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32).div(255.0).contiguous();
}

cv::Mat tensor_to_image(const torch::Tensor& chw01) {
  auto hwc = chw01.detach()
                 .to(torch::kCPU, torch::kFloat32)
                 .clamp(0, 1)
                 .mul(255)
                 .round()
                 .to(torch::kUInt8)
                 .permute({1, 2, 0})
                 .contiguous();
  cv::Mat out(int(hwc.size(0)), int(hwc.size(1)), CV_8UC(int(hwc.size(2))));
  std::memcpy(out.data, hwc.data_ptr(), size_t(hwc.numel()));
  return out;
}

namespace {

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};

void png_error_to_exception(png_structp png, png_const_charp message) {
  auto* what = static_cast<std::string*>(png_get_error_ptr(png));
  *what = message;
  png_longjmp(png, 1);
}

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

}  // namespace

std::string encode_png(const cv::Mat& rgb, const PngText& text) {
  if (rgb.depth() != CV_8U || (rgb.channels() != 3 && rgb.channels() != 1))
    throw cn::Error("encode_png expects 8-bit RGB or gray");
  std::string out, error;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, png_error_to_exception, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_write_struct(&png, nullptr);
    throw cn::Error("cannot initialise libpng");
  }
  // Everything libpng needs outlives the setjmp below (no destructors skipped).
  std::vector<png_text> chunks(text.size());
  std::vector<png_bytep> rows(size_t(rgb.rows));
  cv::Mat contiguous = rgb.isContinuous() ? rgb : rgb.clone();
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw cn::Error("PNG encoding failed (" + error + ")");
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t size) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), size);
      },
      nullptr);
  png_set_IHDR(png, info, png_uint_32(rgb.cols), png_uint_32(rgb.rows), 8,
               rgb.channels() == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  for (size_t i = 0; i < text.size(); ++i) {
    std::memset(&chunks[i], 0, sizeof(png_text));
    chunks[i].compression = is_ascii(text[i].second) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    chunks[i].key = const_cast<char*>(text[i].first.c_str());
    chunks[i].text = const_cast<char*>(text[i].second.c_str());
    chunks[i].text_length = text[i].second.size();
    chunks[i].itxt_length = chunks[i].compression == PNG_ITXT_COMPRESSION_NONE ? text[i].second.size() : 0;
  }
  if (!chunks.empty()) png_set_text(png, info, chunks.data(), int(chunks.size()));
  for (int y = 0; y < rgb.rows; ++y) rows[size_t(y)] = contiguous.ptr<png_byte>(y);
  png_set_rows(png, info, rows.data());
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void write_png(const std::string& path, const cv::Mat& rgb, const PngText& text) {
  std::string bytes;
  try {
    bytes = encode_png(rgb, text);
  } catch (const cn::Error& e) {
    throw cn::Error(path + ": " + e.what());
  }
  const std::string tmp = path + ".tmp";
  std::unique_ptr<FILE, FileCloser> file(std::fopen(tmp.c_str(), "wb"));
  if (!file) throw cn::Error(path + ": cannot write (" + std::strerror(errno) + ")");
  if (std::fwrite(bytes.data(), 1, bytes.size(), file.get()) != bytes.size() || std::fflush(file.get()) != 0) {
    file.reset();
    std::remove(tmp.c_str());
    throw cn::Error(path + ": write failed (disk full?)");
  }
  file.reset();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw cn::Error(path + ": cannot rename the written file into place (" + std::strerror(errno) + ")");
  }
}

PngText read_png_text(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw cn::Error(path + ": cannot open");
  std::string error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, png_error_to_exception, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw cn::Error(path + ": cannot initialise libpng");
  }
  PngText out;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw cn::Error(path + ": not a readable PNG (" + error + ")");
  }
  png_init_io(png, file.get());
  png_read_info(png, info);
  png_textp chunks = nullptr;
  int count = 0;
  png_get_text(png, info, &chunks, &count);
  for (int i = 0; i < count; ++i)
    out.emplace_back(chunks[i].key, std::string(chunks[i].text, chunks[i].compression > 0 ? chunks[i].itxt_length
                                                                                            : chunks[i].text_length));
  png_destroy_read_struct(&png, &info, nullptr);
  return out;
}

}  // namespace cn::io
