#include "commands.h"

#include <map>
#include <optional>

namespace cn::cli {
namespace {
std::map<const CLI::App*, std::function<int()>>& runners() {
  static std::map<const CLI::App*, std::function<int()>> r;
  return r;
}
}  // namespace

CLI::App* add_command(CLI::App& app, const std::string& name, const std::string& description,
                      std::function<int()> run) {
  auto* sub = app.add_subcommand(name, description);
  runners()[sub] = std::move(run);
  return sub;
}

void register_commands(CLI::App& app) {
  add_generate_command(app);
  add_detect_command(app);
  add_convert_command(app);
  add_add_control_command(app);
  add_info_command(app);
  add_train_command(app);
  add_dataset_command(app);
  add_serve_command(app);
}

namespace {
// The exit code of the selected command, looking into nested ones (dataset fill).
std::optional<int> run_selected_command(CLI::App& app) {
  for (auto* sub : app.get_subcommands()) {
    if (auto it = runners().find(sub); it != runners().end()) return it->second();
    if (auto code = run_selected_command(*sub)) return code;
  }
  return std::nullopt;
}
}  // namespace

int run_selected(CLI::App& app) { return run_selected_command(app).value_or(2); }

}  // namespace cn::cli
