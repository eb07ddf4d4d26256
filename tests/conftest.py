"""Fixtures several test files share, and the end-of-run notes about the tiers a run left out.

Tiers (markers in pytest.ini): the default run is the fast tier; ``-m e2e``, ``-m dist``, ``-m sglang`` and
``-m slow`` select one heavy tier each, ``-m ""`` runs every test."""

from __future__ import annotations

import inspect
import os

import pytest
from helpers import REPO, make_tiny_bundle, make_warm_bundle

HEAVY_TIERS = ("e2e", "dist", "sglang", "slow")


@pytest.fixture(scope="session")
def tok():
    """The tiny task's tokenizer (every digit one token). Built once: the tests only read it."""
    from megatron_corew.demo.tiny_task import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory):
    """``make_bundle(**options)`` is ``helpers.make_tiny_bundle(dir, **options)`` built once per session for each
    set of options (a build costs seconds); runs read the bundle and write only to their own directories."""
    signature = inspect.signature(make_tiny_bundle)
    built: dict[tuple, dict] = {}

    def make(**options) -> dict:
        bound = signature.bind("", **options)
        bound.apply_defaults()
        key = tuple(sorted((k, v) for k, v in bound.arguments.items() if k != "root"))
        if key not in built:
            built[key] = make_tiny_bundle(str(tmp_path_factory.mktemp("bundle")), **options)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(make_bundle):
    """The default tiny bundle: a random tiny Qwen3 with the tiny task's tokenizer and parquet files."""
    return make_bundle()


@pytest.fixture(scope="session")
def warm_bundle(tmp_path_factory):
    """The tiny task's model warm-started to answer ``\\boxed{N}`` (``helpers.make_warm_bundle``, ~20 s once per
    session): runs on it earn non-zero, varying rewards under gt and the label-free methods, so an equality test of
    two runs compares real GRPO updates (check with ``helpers.assert_real_signal``). Same keys as tiny_bundle."""
    return make_warm_bundle(str(tmp_path_factory.mktemp("warm_bundle")))


def pytest_terminal_summary(terminalreporter):
    """One line for the SGLang tests that were skipped, one for the heavy-tier tests the run did not select."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "sglang" in getattr(r, "keywords", {})]
    if skipped:
        why = "SGLang is not installed"
        if os.path.isdir(os.path.join(REPO, ".venv-sglang")):  # installed: the first test's own reason
            why = str(skipped[0].longrepr[-1]) if isinstance(skipped[0].longrepr, tuple) else "see pytest -rs"
        terminalreporter.write_line(
            f"{len(skipped)} SGLang tests skipped ({why}): `bash tools/install_sglang.sh` enables them"
        )
    deselected = terminalreporter.stats.get("deselected", [])
    heavy = [item for item in deselected if any(t in item.keywords for t in HEAVY_TIERS)]
    if heavy:
        terminalreporter.write_line(
            f"{len(heavy)} tests of the {'/'.join(HEAVY_TIERS)} tiers not selected: "
            'python -m pytest -m "" runs every tier'
        )
