#pragma once
// Registry of `controlnet` subcommands. Each add_*_command() creates its
// subcommand on `app` and sets its callback; the callback's result is the exit code.
#include <CLI/CLI.hpp>
#include <functional>

namespace cn::cli {

// Registers every subcommand.
void register_commands(CLI::App& app);
// Runs the parsed subcommand; returns the process exit code.
int run_selected(CLI::App& app);

// Registers `name` with its description; `run` is called when it was selected.
CLI::App* add_command(CLI::App& app, const std::string& name, const std::string& description,
                      std::function<int()> run);

void add_info_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_dataset_command(CLI::App& app);
void add_detect_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_add_control_command(CLI::App& app);
void add_serve_command(CLI::App& app);

}  // namespace cn::cli
