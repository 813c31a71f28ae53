// The `controlnet` command: parses arguments and calls the library. Each
// subcommand lives in its own file (commands.h lists them).
#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"
#include "controlnet/error.h"
#include "controlnet/runtime.h"

int main(int argc, char** argv) {
  cn::init_runtime();
  CLI::App app{"controlnet.cpp: ControlNet for Stable Diffusion, in C++"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  cn::cli::register_commands(app);
  try {
    app.parse(argc, argv);
    return cn::cli::run_selected(app);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const cn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "internal error: " << e.what() << "\n";
    return 1;
  }
}
