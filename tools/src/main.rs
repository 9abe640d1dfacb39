//! `ditac`: the command-line tools of the DiTAC project.
//!
//! Every command reports a bad input as one line on standard error and exits with status 2.

mod commands;

mod help_markdown;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ditac",
    version = version_line(),
    about = "DiTAC for ONNX Runtime: bases, evaluation, models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Memory budget of this command: the most bytes one allocation sized by a model, spec,
    /// parameter file or flag may take (e.g. 1073741824 or 1G; default DITAC_MAX_BYTES, else 1G).
    #[arg(long, global = true, value_name = "BYTES", value_parser = parse_max_bytes)]
    max_bytes: Option<u64>,
}

/// `ditac --version`: the version (set once, in the workspace's Cargo.toml), the commit it was built
/// from, and the ONNX Runtime C API level the plugin needs.
fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        format!(
            "{} (commit {}; the plugin needs ONNX Runtime C API level {}, ONNX Runtime >= 1.{})",
            env!("CARGO_PKG_VERSION"),
            env!("DITAC_GIT_COMMIT"),
            ditac::plugin::ORT_API_LEVEL,
            ditac::plugin::ORT_API_LEVEL
        )
    })
}

fn parse_max_bytes(text: &str) -> Result<u64, String> {
    ditac::core::budget::parse_bytes(text)
}

#[derive(Subcommand)]
enum Command {
    /// Print the null-space basis B (2·tess rows of d numbers) as one JSON array.
    Basis(commands::basis::Args),
    /// Evaluate the activation (and optionally its gradients) on numbers read from standard input.
    Eval(commands::eval::Args),
    /// Write the example networks of models/ (a DiTAC MLP and its frozen DiTACLut twin).
    ExampleModels(commands::examples::Args),
    /// Run the example models through ONNX Runtime with the plugin and show the results.
    Demo(commands::demo::Args),
    /// Build a whole network (ONNX) from a spec (TOML/JSON) and its weights (safetensors/.npz).
    Build(commands::build::Args),
    /// Replace named nodes by DiTAC nodes with θ from a parameter file.
    Patch(commands::patch::Args),
    /// Turn DiTAC nodes with a constant θ into DiTACLut nodes with their tables.
    Freeze(commands::freeze::Args),
    /// Rewrite DiTAC/DiTACLut nodes as standard ONNX operators (runs without the plugin).
    Lower(commands::lower::Args),
    /// Show the DiTAC nodes of a model (attributes, θ shape, table size) and its opset imports.
    Inspect(commands::inspect::Args),
    /// Draw each DiTAC node's activation (SVG, PNG with --png) against GELU.
    Plot(commands::plot::Args),
    /// Write ONNX Runtime's training artifacts (training/eval/optimizer models, checkpoint) for a
    /// spec or an ONNX model with DiTAC nodes.
    TrainArtifacts(commands::train_artifacts::Args),
    /// Train a spec or an ONNX model with DiTAC nodes on data through ONNX Runtime; writes the
    /// trained inference model and a loss curve.
    Train(commands::train::Args),
    /// Write the data of the training examples (regression, paper-regression, gmm, digits).
    ExampleData(commands::example_data::Args),
    /// Time DiTAC's ops against ONNX Runtime's Gelu (and Identity) through real sessions.
    Bench(commands::bench::Args),
    /// Write a Triton Inference Server model repository (Python backend and native ONNX Runtime backend).
    Triton(commands::triton::Args),
    /// Print this command-line reference as Markdown (docs/cli.md is its output).
    #[command(hide = true)]
    HelpMarkdown,
}

/// The command line as clap parses it, with one rule added for every subcommand: an option's value
/// may be a negative number (`--a -3`, `--lr -1e-3` reaches the command's own check), which clap
/// would otherwise read as an unknown flag. Lists that start with a minus (`--interval -5,5`) are
/// not numbers to clap: those options allow hyphen values themselves.
fn cli_command() -> clap::Command {
    Cli::command().mut_subcommands(|sub| {
        sub.mut_args(|arg| {
            if arg.get_action().takes_values() && !arg.is_positional() {
                arg.allow_negative_numbers(true)
            } else {
                arg
            }
        })
    })
}

/// A usage error as one line: clap's message with what it lists (the missing arguments, the
/// possible values) and its tip (the similar argument or subcommand it suggests), then the usage;
/// without the blank lines of its multi-line rendering (the same one-line form as every other error).
fn usage_error_line(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a command is required (see 'ditac --help')".to_string();
    }
    let rendered = e.render().to_string();
    let mut message: Option<String> = None;
    let mut listed = Vec::new();
    let mut tips = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(m) = line.strip_prefix("error:") {
            message.get_or_insert_with(|| m.trim().to_string());
        } else if let Some(u) = line.strip_prefix("Usage:") {
            usage.get_or_insert_with(|| u.trim().to_string());
        } else if let Some(t) = line.strip_prefix("tip:") {
            tips.push(t.trim().to_string());
        } else if line.starts_with("For more information") {
        } else if usage.is_none() {
            listed.push(line.to_string());
        }
    }
    let mut line = message.unwrap_or_else(|| e.kind().to_string());
    if !listed.is_empty() {
        line = format!("{} {}", line, listed.join(", "));
    }
    for t in tips {
        line = format!("{line}; tip: {t}");
    }
    match usage {
        Some(u) => format!("{line} (usage: {u}; see --help)"),
        None => line,
    }
}

fn main() -> ExitCode {
    let cli = match cli_command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors: clap prints them in full.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("ditac: error: {}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(b) = cli.max_bytes {
        ditac_tools::budget::set_max_bytes(b);
    }
    let result = match cli.command {
        Command::Basis(a) => commands::basis::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::ExampleModels(a) => commands::examples::run(a),
        Command::Demo(a) => commands::demo::run(a),
        Command::Build(a) => commands::build::run(a),
        Command::Patch(a) => commands::patch::run(a),
        Command::Freeze(a) => commands::freeze::run(a),
        Command::Lower(a) => commands::lower::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Plot(a) => commands::plot::run(a),
        Command::TrainArtifacts(a) => commands::train_artifacts::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::ExampleData(a) => commands::example_data::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Triton(a) => commands::triton::run(a),
        Command::HelpMarkdown => {
            print!("{}", help_markdown::render(&cli_command()));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = one_line(&format!("{e:#}"));
            eprintln!("ditac: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// An error on one line: ONNX Runtime's messages span lines (a status, then the node and the
/// kernel's own text); their lines are joined with "; ", runs of blanks squeezed.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        cli_command().debug_assert();
    }

    /// Every option says what it is and what it defaults to: a default clap shows, or one the help
    /// text names ("default: ..."), or it is required, or it is a switch (off unless given).
    #[test]
    fn every_option_has_help_and_a_default() {
        let mut cmd = cli_command();
        cmd.build();
        let mut missing = Vec::new();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if help.is_empty() {
                    missing.push(format!("{} --{id}: no help", sub.get_name()));
                    continue;
                }
                let switch = !arg.get_action().takes_values();
                let has_default = !arg.get_default_values().is_empty()
                    || help.to_lowercase().contains("default")
                    || arg.is_required_set()
                    || arg.is_positional();
                if !switch && !has_default {
                    missing.push(format!("{} --{id}: no default shown", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn errors_from_onnx_runtime_are_one_line() {
        let e = "training failed at step 3: Non-zero status code returned while running Add node.\n  Name:'add'\n Status Message: bad";
        assert_eq!(
            one_line(e),
            "training failed at step 3: Non-zero status code returned while running Add node.; Name:'add'; Status Message: bad"
        );
    }
}
