//! `gantry --help` at every level: every subcommand and every argument says what it is, and a
//! mistyped subcommand or flag gets clap's suggestion on gantry's one error line.

mod common;

use clap::CommandFactory;
use common::{assert_user_error, gantry};
use gantry_cli::Cli;

/// Every subcommand and argument under `cmd` without help text, as `gantry fid <A>`.
fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
            continue;
        }
        if arg
            .get_help()
            .is_none_or(|h| h.to_string().trim().is_empty())
        {
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(l), _) => format!("--{l}"),
                (None, Some(s)) => format!("-{s}"),
                (None, None) => format!("<{}>", arg.get_id().as_str().to_uppercase()),
            };
            out.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        if sub
            .get_about()
            .is_none_or(|h| h.to_string().trim().is_empty())
        {
            out.push(sub_path.clone());
        }
        undocumented(sub, &sub_path, out);
    }
}

#[test]
fn every_subcommand_and_argument_has_help_text() {
    let cmd = Cli::command();
    cmd.clone().debug_assert();
    let mut missing = Vec::new();
    undocumented(&cmd, "gantry", &mut missing);
    assert!(
        missing.is_empty(),
        "{} without help text (a doc comment on the field or variant):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn mistyped_subcommands_flags_and_values_get_clap_s_suggestion_on_one_line() {
    for (args, needle) in [
        (
            &["trian"][..],
            "unrecognized subcommand 'trian' (did you mean 'train'",
        ),
        (
            &["classify", "evla"][..],
            "unrecognized subcommand 'evla' (did you mean 'eval'?)",
        ),
        (
            &["eval", "--chekpoint", "runs/x"][..],
            "unexpected argument '--chekpoint' found (did you mean '--checkpoint'?)",
        ),
        (
            &["fid", "a", "b", "--mode", "tff"][..],
            "invalid value 'tff' for '--mode <MODE>' (did you mean 'tf'?) (valid: pytorch-fid, tf, clean)",
        ),
        // Nothing close: no suggestion, still one line.
        (
            &["train", "--colour"][..],
            "unexpected argument '--colour' found",
        ),
    ] {
        assert_user_error(&gantry(args), needle);
    }
    let out = gantry(&["eval", "--chekpoint", "x"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("tip:"),
        "clap's own tip lines leaked"
    );
}

#[test]
fn mistyped_configuration_keys_get_the_closest_valid_key() {
    assert_user_error(
        &gantry(&["train", "--set", "train.stpes=3", "--dry-run"]),
        "train.stpes: unknown key `stpes` (did you mean `steps`?), valid: `steps`",
    );
    assert_user_error(
        &gantry(&["train", "--set", "trian.steps=3", "--dry-run"]),
        "trian: unknown key `trian` (did you mean `train`?)",
    );
    assert_user_error(
        &gantry(&["train", "--set", "loss.kind=hinj", "--dry-run"]),
        "loss.kind: unknown variant `hinj` (did you mean `hinge`?)",
    );
    // In a file, in a model's own section, and in the other tasks' configurations.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my.toml");
    std::fs::write(&file, "[train]\nbatch_sise = 8\n").unwrap();
    assert_user_error(
        &gantry(&["train", "--config", file.to_str().unwrap(), "--dry-run"]),
        "train.batch_sise: unknown key `batch_sise` (did you mean `batch_size`?)",
    );
    assert_user_error(
        &gantry(&["train", "--set", "model.ngff=8", "--dry-run"]),
        "model.ngff: unknown key `ngff` (did you mean `ngf`?)",
    );
    assert_user_error(
        &gantry(&["classify", "train", "--set", "train.lrr=0.1", "--dry-run"]),
        "train.lrr: unknown field `lrr` (did you mean `lr`?)",
    );
    assert_user_error(
        &gantry(&[
            "train",
            "--config",
            "ugatit-light-64",
            "--set",
            "train.step=3",
            "--dry-run",
        ]),
        "train.step: unknown field `step` (did you mean `steps`?)",
    );
    // Nothing close: the list alone.
    let out = gantry(&["train", "--set", "train.colour=3", "--dry-run"]);
    assert_user_error(&out, "train.colour: unknown key `colour`, valid: `steps`");
}
