#pragma once
// `controlnet serve`: an HTTP API and a web page over one loaded model.
//
// Generations are jobs: POST /api/jobs queues one (multipart form: an
// "options" JSON field plus the control images as file parts), one worker
// runs them in order, GET /api/jobs/<id> reports state and progress, GET
// /api/jobs/<id>/images/<n> returns a PNG with its "parameters" text, DELETE
// /api/jobs/<id> cancels. POST /api/detect runs a preprocessor, GET /api/info
// says what is served, GET / is the page. Errors are JSON {"error": message}.
#include <map>
#include <memory>
#include <string>

#include "controlnet/pipeline.h"

namespace cn::server {

struct ServerOptions {
  ModelOptions model;                              // empty model: the embedded default
  std::map<std::string, std::string> controlnets;  // name -> file offered to clients
  std::string annotator_dir;                       // for network preprocessors
  std::string host = "127.0.0.1";
  int port = 8188;                                 // 0: any free port (see Server::port)
  int max_queue = 16;                              // queued jobs beyond this are refused (503)
  int max_steps = 150;                             // per-request limits protecting the server
  int max_pixels = 1024 * 1024;
  int max_images = 4;                              // batch_size x batch_count
  size_t keep_finished = 64;                       // finished jobs kept for their results
};

class Server {
 public:
  // Loads the model (and the embedded default's ControlNet when serving it).
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the socket; returns the port (useful with port 0). Throws cn::Error.
  int bind();
  // Serves until stop() (from another thread or a signal handler's thread).
  void run();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cn::server
