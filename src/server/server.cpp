#include "server/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "io/image.h"
#include "pipeline/default_model.h"
#include "preprocess/preprocess.h"
#include "sampling/schedule.h"
#include "server/web_page.h"
#include "util/dtype.h"

namespace cn::server {
namespace {

using json = nlohmann::json;

enum class JobState { queued, running, done, failed, cancelled };

const char* to_string(JobState state) {
  switch (state) {
    case JobState::queued: return "queued";
    case JobState::running: return "running";
    case JobState::done: return "done";
    case JobState::failed: return "failed";
    case JobState::cancelled: return "cancelled";
  }
  return "?";
}

struct Job {
  std::string id;
  GenerateOptions options;
  JobState state = JobState::queued;
  Progress progress;
  std::string error;
  std::vector<std::string> pngs;
  std::vector<int64_t> seeds;
  std::atomic<bool> cancel{false};
};

void reply_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  reply_json(res, {{"error", message}}, status);
}

// A typed option with a message naming it when it has the wrong type.
template <typename T>
T get(const json& j, const std::string& key, const T& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    throw Error("option '" + key + "' has the wrong type (" + j[key].dump() + ")");
  }
}

void reject_unknown_keys(const json& j, const std::set<std::string>& known, const std::string& where) {
  for (const auto& [key, _] : j.items())
    if (!known.count(key)) {
      std::string valid;
      for (const auto& k : known) valid += (valid.empty() ? "" : ", ") + k;
      throw Error("unknown " + where + " option '" + key + "' (valid: " + valid + ")");
    }
}

Image to_image(const cv::Mat& rgb) {
  Image image;
  image.width = rgb.cols;
  image.height = rgb.rows;
  const cv::Mat contiguous = rgb.isContinuous() ? rgb : rgb.clone();
  image.rgb.assign(contiguous.data, contiguous.data + contiguous.total() * 3);
  return image;
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  std::unique_ptr<Pipeline> pipeline;
  httplib::Server http;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Job>> queue;
  std::map<std::string, std::shared_ptr<Job>> jobs;
  std::deque<std::string> finished;  // ids, oldest first
  bool stopping = false;
  std::thread worker;
  std::mt19937_64 ids{std::random_device{}()};
  int port = -1;

  GenerateOptions parse_request(const httplib::Request& req);
  json job_status(const Job& job);
  void run_jobs();
  void retire(const std::shared_ptr<Job>& job);
  void add_routes();
};

// The options JSON mirrors GenerateOptions; controls name a served ControlNet
// and the form part holding their image.
GenerateOptions Server::Impl::parse_request(const httplib::Request& req) {
  if (!req.has_file("options")) throw Error("missing the 'options' form field (JSON)");
  json j;
  try {
    j = json::parse(req.get_file_value("options").content);
  } catch (const json::exception& e) {
    throw Error(std::string("'options' is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw Error("'options' must be a JSON object");
  reject_unknown_keys(j,
                      {"prompt", "negative_prompt", "steps", "cfg", "sampler", "schedule", "seed", "width", "height",
                       "batch_size", "batch_count", "clip_skip", "guess_mode", "controls"},
                      "generation");
  GenerateOptions o = pipeline->recommended_options();  // what the request leaves out
  o.annotator_dir = options.annotator_dir;
  o.prompt = get<std::string>(j, "prompt", "");
  o.negative_prompt = get<std::string>(j, "negative_prompt", "");
  o.steps = get<int>(j, "steps", o.steps);
  o.cfg = get<double>(j, "cfg", o.cfg);
  o.sampler = get<std::string>(j, "sampler", o.sampler);
  o.schedule = get<std::string>(j, "schedule", o.schedule);
  o.seed = get<int64_t>(j, "seed", o.seed);
  o.width = get<int>(j, "width", o.width);
  o.height = get<int>(j, "height", o.height);
  o.batch_size = get<int>(j, "batch_size", o.batch_size);
  o.batch_count = get<int>(j, "batch_count", o.batch_count);
  o.clip_skip = get<int>(j, "clip_skip", o.clip_skip);
  o.guess_mode = get<bool>(j, "guess_mode", o.guess_mode);
  if (o.steps > options.max_steps)
    throw Error("steps must be at most " + std::to_string(options.max_steps) + " on this server");
  if (int64_t(o.width) * o.height > options.max_pixels)
    throw Error("width x height must be at most " + std::to_string(options.max_pixels) + " pixels on this server");
  if (o.batch_size * o.batch_count > options.max_images)
    throw Error("at most " + std::to_string(options.max_images) + " images per job on this server");
  sampling::resolve_sampler(o.sampler, o.schedule);  // unknown names fail now, not in the queue

  const auto controls = get<json>(j, "controls", json::array());
  if (!controls.is_array()) throw Error("'controls' must be a list");
  for (const auto& c : controls) {
    if (!c.is_object()) throw Error("each control must be a JSON object");
    reject_unknown_keys(c, {"controlnet", "image", "scale", "start", "end", "mode", "resize_mode", "preprocess", "mask"},
                        "control");
    ControlNetUnit u;
    std::string name = get<std::string>(c, "controlnet", "");
    if (name.empty() && options.controlnets.size() == 1) name = options.controlnets.begin()->first;
    const auto served = options.controlnets.find(name);
    if (served == options.controlnets.end()) {
      std::string valid;
      for (const auto& [n, _] : options.controlnets) valid += (valid.empty() ? "" : ", ") + n;
      throw Error("no ControlNet named '" + name + "' is served (served: " + (valid.empty() ? "none" : valid) + ")");
    }
    u.model = served->second;
    const auto part = get<std::string>(c, "image", "");
    if (part.empty() || !req.has_file(part)) throw Error("control image form part '" + part + "' is missing");
    u.pixels = to_image(io::decode_rgb_image(req.get_file_value(part).content, "control image '" + part + "'"));
    u.scale = get<double>(c, "scale", u.scale);
    u.start = get<double>(c, "start", u.start);
    u.end = get<double>(c, "end", u.end);
    if (c.contains("mode")) u.mode = parse_control_mode(get<std::string>(c, "mode", ""));
    u.resize_mode = get<std::string>(c, "resize_mode", u.resize_mode);
    u.preprocess = get<std::string>(c, "preprocess", "");
    if (!u.preprocess.empty()) preprocess::find_detector(u.preprocess);
    const auto mask_part = get<std::string>(c, "mask", "");  // inpaint: the form part of the mask
    if (!mask_part.empty()) {
      if (!req.has_file(mask_part)) throw Error("inpaint mask form part '" + mask_part + "' is missing");
      u.mask_pixels =
          to_image(io::decode_rgb_image(req.get_file_value(mask_part).content, "inpaint mask '" + mask_part + "'"));
    }
    o.controls.push_back(std::move(u));
  }
  return o;
}

json Server::Impl::job_status(const Job& job) {
  json j = {{"id", job.id},
            {"state", to_string(job.state)},
            {"step", job.progress.step},
            {"steps", job.progress.steps ? job.progress.steps : job.options.steps},
            {"batch", job.progress.batch},
            {"batch_count", job.options.batch_count},
            {"elapsed", job.progress.elapsed},
            {"images", job.pngs.size()},
            {"seeds", job.seeds}};
  if (!job.error.empty()) j["error"] = job.error;
  if (job.state == JobState::queued) {
    int position = 0;
    for (const auto& queued : queue) {
      if (queued.get() == &job) break;
      ++position;
    }
    j["position"] = position;
  }
  return j;
}

// Finished jobs are kept for their results, the oldest dropped beyond the limit.
void Server::Impl::retire(const std::shared_ptr<Job>& job) {
  finished.push_back(job->id);
  while (finished.size() > options.keep_finished) {
    jobs.erase(finished.front());
    finished.pop_front();
  }
}

void Server::Impl::run_jobs() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex);
      wake.wait(lock, [&] { return stopping || !queue.empty(); });
      if (stopping) return;
      job = queue.front();
      queue.pop_front();
      job->state = JobState::running;
    }
    JobState state = JobState::done;
    std::string error;
    std::vector<std::string> pngs;
    std::vector<int64_t> seeds;
    try {
      auto images = pipeline->generate(job->options, [&](const Progress& p) {
        std::lock_guard lock(mutex);
        job->progress = p;
        return !job->cancel && !stopping;
      });
      for (const auto& image : images) {
        pngs.push_back(encode_png(image));
        seeds.push_back(image.seed);
      }
    } catch (const Cancelled&) {
      state = JobState::cancelled;
    } catch (const std::exception& e) {
      state = JobState::failed;
      error = e.what();
    }
    std::lock_guard lock(mutex);
    job->state = state;
    job->error = error;
    job->pngs = std::move(pngs);
    job->seeds = std::move(seeds);
    retire(job);
  }
}

void Server::Impl::add_routes() {
  http.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(kWebPage, "text/html"); });

  http.Get("/api/info", [this](const httplib::Request&, httplib::Response& res) {
    json detectors = json::array();
    for (const auto& d : preprocess::detectors())
      detectors.push_back({{"name", d.name},
                           {"description", d.description},
                           {"threshold_a", d.threshold_a},
                           {"threshold_b", d.threshold_b},
                           {"default_a", d.default_a},
                           {"default_b", d.default_b},
                           {"framing", preprocess::to_string(d.framing)},
                           {"available", d.checkpoint.empty() ||
                                             preprocess::annotator_file_present(d.checkpoint, options.annotator_dir)}});
    json controlnets = json::array();
    for (const auto& [name, _] : options.controlnets) controlnets.push_back(name);
    const auto recommended = pipeline->recommended_options();
    reply_json(res, {{"model", pipeline->describe()},
                     {"recommended",
                      {{"steps", recommended.steps},
                       {"cfg", recommended.cfg},
                       {"sampler", recommended.sampler},
                       {"schedule", recommended.schedule}}},
                     {"controlnets", controlnets},
                     {"detectors", detectors},
                     {"samplers", sampling::sampler_names()},
                     {"limits",
                      {{"max_steps", options.max_steps},
                       {"max_pixels", options.max_pixels},
                       {"max_images", options.max_images}}}});
  });

  http.Post("/api/jobs", [this](const httplib::Request& req, httplib::Response& res) {
    auto job = std::make_shared<Job>();
    try {
      job->options = parse_request(req);
    } catch (const Error& e) {
      return reply_error(res, 400, e.what());
    }
    std::lock_guard lock(mutex);
    if (int(queue.size()) >= options.max_queue)
      return reply_error(res, 503, "the queue is full (" + std::to_string(options.max_queue) + " jobs); try again later");
    char id[17];
    std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(ids()));
    job->id = id;
    jobs[job->id] = job;
    queue.push_back(job);
    wake.notify_one();
    reply_json(res, job_status(*job), 202);
  });

  http.Get(R"(/api/jobs/([0-9a-f]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mutex);
    const auto it = jobs.find(req.matches[1]);
    if (it == jobs.end()) return reply_error(res, 404, "no job " + std::string(req.matches[1]));
    reply_json(res, job_status(*it->second));
  });

  http.Get(R"(/api/jobs/([0-9a-f]+)/images/(\d+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mutex);
    const auto it = jobs.find(req.matches[1]);
    if (it == jobs.end()) return reply_error(res, 404, "no job " + std::string(req.matches[1]));
    const auto& job = *it->second;
    const size_t index = std::stoul(req.matches[2]);
    if (job.state != JobState::done) return reply_error(res, 409, std::string("job is ") + to_string(job.state));
    if (index >= job.pngs.size())
      return reply_error(res, 404, "job has " + std::to_string(job.pngs.size()) + " images");
    res.set_content(job.pngs[index], "image/png");
  });

  http.Delete(R"(/api/jobs/([0-9a-f]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mutex);
    const auto it = jobs.find(req.matches[1]);
    if (it == jobs.end()) return reply_error(res, 404, "no job " + std::string(req.matches[1]));
    auto job = it->second;
    if (job->state == JobState::queued) {
      queue.erase(std::find(queue.begin(), queue.end(), job));
      job->state = JobState::cancelled;
      retire(job);
    } else if (job->state == JobState::running) {
      job->cancel = true;  // the worker stops at the next step
    }
    reply_json(res, job_status(*job));
  });

  http.Post("/api/detect", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      auto field = [&](const char* name) { return req.has_file(name) ? req.get_file_value(name).content : ""; };
      if (!req.has_file("image")) throw Error("missing the 'image' form part");
      preprocess::DetectOptions o;
      o.annotator_dir = options.annotator_dir;
      auto number = [&](const char* name, double fallback) {
        const auto text = field(name);
        if (text.empty()) return fallback;
        try {
          return std::stod(text);
        } catch (const std::exception&) {
          throw Error(std::string("'") + name + "' must be a number");
        }
      };
      o.resolution = int(number("resolution", o.resolution));
      o.threshold_a = number("threshold_a", o.threshold_a);
      o.threshold_b = number("threshold_b", o.threshold_b);
      o.output_resolution = int(number("output_resolution", o.output_resolution));
      if (!field("framing").empty()) o.framing = preprocess::parse_framing(field("framing"));
      if (!field("dtype").empty()) o.dtype = parse_dtype(field("dtype"));
      // The worker may be constructing a ControlNet under another default dtype.
      const std::shared_lock<std::shared_mutex> no_construction(default_dtype_mutex());
      const auto map = preprocess::detect(field("type"), io::decode_rgb_image(field("image"), "image"), o);
      res.set_content(io::encode_png(map), "image/png");
    } catch (const Error& e) {
      reply_error(res, 400, e.what());
    }
  });

  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      reply_error(res, 500, e.what());
    } catch (...) {
      reply_error(res, 500, "internal error");
    }
  });
  // httplib's own refusals (malformed requests) get a JSON body too.
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) reply_error(res, res.status, "request refused by the HTTP layer (status " + std::to_string(res.status) + ")");
  });
  http.set_payload_max_length(64 << 20);
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  auto& m = impl_->options;
  m = std::move(options);
  if (m.model.model.empty()) {
    m.model.model = default_model_dir();
    // The embedded model's ControlNet is served unless others were named.
    if (m.controlnets.empty()) m.controlnets["default"] = (std::filesystem::path(m.model.model) / "controlnet").string();
  }
  impl_->pipeline = Pipeline::load(m.model);
  impl_->add_routes();
  impl_->worker = std::thread([this] { impl_->run_jobs(); });
}

Server::~Server() {
  stop();
  if (impl_->worker.joinable()) impl_->worker.join();
}

int Server::bind() {
  auto& m = impl_->options;
  impl_->port = m.port == 0 ? impl_->http.bind_to_any_port(m.host) : (impl_->http.bind_to_port(m.host, m.port) ? m.port : -1);
  if (impl_->port < 0) throw Error("cannot listen on " + m.host + ":" + std::to_string(m.port) + " (in use?)");
  return impl_->port;
}

void Server::run() {
  if (impl_->port < 0) bind();
  impl_->http.listen_after_bind();
}

void Server::stop() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->http.stop();
}

}  // namespace cn::server
