// `controlnet serve`: the HTTP API and web page (src/server).
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "controlnet/error.h"
#include "server/server.h"

namespace cn::cli {

void add_serve_command(CLI::App& app) {
  static server::ServerOptions o;
  static std::vector<std::string> controlnets;
  auto* cmd = add_command(app, "serve", "Serve the HTTP API and a web page for generating and detecting", [] {
    // NAME=PATH, or PATH named by its file stem.
    for (const auto& spec : controlnets) {
      const auto eq = spec.find('=');
      const std::string name = eq == std::string::npos ? std::filesystem::path(spec).stem().string() : spec.substr(0, eq);
      const std::string path = eq == std::string::npos ? spec : spec.substr(eq + 1);
      if (name.empty() || path.empty()) throw Error("--controlnet expects NAME=PATH or PATH (got '" + spec + "')");
      if (!o.controlnets.emplace(name, path).second) throw Error("two ControlNets are named '" + name + "'");
    }
    server::Server server(o);
    const int port = server.bind();
    std::cout << "serving on http://" << o.host << ":" << port << "/ (Ctrl-C to stop)" << std::endl;
    server.run();
    return 0;
  });
  cmd->add_option("-m,--model", o.model.model, "SD checkpoint or diffusers folder; default: the embedded model");
  cmd->add_option("--dtype", o.model.dtype, "Compute dtype")->check(CLI::IsMember({"fp32", "bf16", "fp16"}))->capture_default_str();
  cmd->add_option("--device", o.model.device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--controlnet", controlnets, "ControlNet offered to clients: NAME=PATH or PATH (repeatable)");
  cmd->add_option("--annotator-dir", o.annotator_dir, "Folder of the annotator checkpoints");
  cmd->add_option("--host", o.host, "Address to listen on (0.0.0.0: every interface)")->capture_default_str();
  cmd->add_option("--port", o.port, "Port (0: any free port)")->capture_default_str();
  cmd->add_option("--max-queue", o.max_queue, "Jobs waiting beyond this are refused")->capture_default_str();
  cmd->add_option("--max-steps", o.max_steps, "Largest steps a request may ask for")->capture_default_str();
  cmd->add_option("--max-pixels", o.max_pixels, "Largest width x height a request may ask for")->capture_default_str();
}

}  // namespace cn::cli
