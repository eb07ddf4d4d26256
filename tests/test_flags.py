"""The one flag table (megatron_corew/flags.py): every flag documented in --help with its default, every rule and
experiment entry names a real flag, and the refusals the table adds."""

import argparse
import re

import pytest


def _help_blocks(text: str) -> dict[str, str]:
    """--help output -> {option string: its whole entry (name line and wrapped help lines)}."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-{1,2}[A-Za-z0-9][\w-]*)", line)
        if m:
            current = []
            for opt in re.findall(r"(?:^|, )(-{1,2}[A-Za-z0-9][\w-]*)", line.strip()):
                blocks[opt] = current
            current.append(line)
        elif current is not None and line.startswith("    "):
            current.append(line)
        else:
            current = None
    return {k: " ".join(" ".join(v).split()) for k, v in blocks.items()}


def test_every_flag_shows_help_and_default_in_help(capsys):
    """What ``python train_rl.py --help`` prints (same parse_args): each flag has a help line and its default."""
    from megatron_corew.arguments import build_parser, parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["--help"])
    assert e.value.code == 0
    blocks = _help_blocks(capsys.readouterr().out)
    missing_help, missing_default = [], []
    actions = [a for a in build_parser()._actions if not isinstance(a, argparse._HelpAction)]
    assert len(actions) > 140
    for a in actions:
        opt = a.option_strings[0]
        block = blocks.get(opt)
        assert block is not None, f"{opt} is not in --help"
        metavar = a.metavar or a.dest.upper()
        text = block.split(opt, 1)[1]
        for o in a.option_strings[1:]:
            text = text.replace(o, "")
        text = text.replace(str(metavar), "").replace(",", "").replace("{", "").strip()
        if not a.help or len(text.split("(default:")[0].strip()) < 8:
            missing_help.append(opt)
        if "(default:" not in block:
            missing_default.append(opt)
    assert missing_help == [] and missing_default == []


def test_the_table_names_real_flags():
    from megatron_corew.arguments import build_parser
    from megatron_corew.flags import EXPERIMENT, RANGES, REFUSE, RULES

    dests = {a.dest for a in build_parser()._actions}
    assert {r.dest for r in RULES} - dests == set()
    assert set(RANGES) - dests == set()
    assert set(EXPERIMENT) - dests == set()
    assert all(v == REFUSE or len(v) > 20 for v in EXPERIMENT.values())  # a warned flag says why it may change


def test_mis_bounds_that_keep_only_exact_agreement_are_refused(tiny_bundle, tmp_path, capsys):
    """--rollout-is mis with upper bound 1 and lower bound 1 drops every token whose ratio is not exactly 1 (on
    a real engine nearly all of them): refused in one line; the default bounds (2, 1/2) pass."""
    from megatron_corew.arguments import parse_args

    base = ["--hf-checkpoint", tiny_bundle["model"], "--train-data", tiny_bundle["train"]]
    base += ["--output-dir", str(tmp_path / "out"), "--rollout-is", "mis"]
    for extra in (
        ["--rollout-is-threshold", "1"],
        ["--rollout-is-threshold", "1", "--rollout-is-threshold-lower", "1"],
    ):
        with pytest.raises(SystemExit) as e:
            parse_args(base + extra)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "error: --rollout-is mis with --rollout-is-threshold 1 and lower bound 1 drops every token whose ratio "
            "is not exactly 1; widen the bounds"
        ]
    assert parse_args(base).rollout_is_threshold == 2.0
