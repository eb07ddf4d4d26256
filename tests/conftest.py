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


def _tell(config, lines: list[str]) -> None:
    """Print to the terminal now, past pytest's output capture."""
    with config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print("\n" + "\n".join(lines), flush=True)


# Every process a test starts inherits this marker (subprocesses copy os.environ), so the sweep below finds the
# ones that outlived their test even after they left this process's tree (setsid, a parent that died).
_RUN_MARKER = ("MEGATRON_COREW_TEST_RUN", f"{os.getpid()}-{os.urandom(4).hex()}")
os.environ[_RUN_MARKER[0]] = _RUN_MARKER[1]


def _marked_processes() -> dict:
    import psutil

    found = {}
    for p in psutil.process_iter(["pid", "create_time", "name"]):
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(_RUN_MARKER[0]) == _RUN_MARKER[1]:
                found[(p.pid, p.info["create_time"])] = p
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module", autouse=True)
def no_leaked_processes(request):
    """A test module must not leave processes behind (an SGLang server's idle scheduler takes a whole core, a Ray
    daemon or a trainer's helper holds memory): each would slow every later test. At the end of a module (after its
    own fixtures) a process this run started during the module and still running is killed and named in one line."""
    import psutil

    before = set(_marked_processes())
    yield
    # torch's shared-memory manager is an idle daemon that lives as long as the process that needed it
    left = [p for key, p in _marked_processes().items() if key not in before and p.info["name"] != "torch_shm_manager"]
    if not left:
        return
    names = []
    for p in left:
        try:
            names.append(f"{p.pid}:{' '.join(p.cmdline()[:3])[:80]}")
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    _tell(
        request.config,
        [f"[conftest] {request.module.__name__} left {len(left)} processes running, killed: {'; '.join(names)}"],
    )


_config = None


def pytest_configure(config):
    global _config
    _config = config


def _machine_state() -> str:
    """Free disk, available memory, load and the busiest processes: what decides whether a failure or a slow test
    is the code's or the machine's."""
    import shutil

    import psutil

    disk = shutil.disk_usage(os.environ.get("TMPDIR", "/tmp")).free / 2**30
    mem = psutil.virtual_memory().available / 2**30
    largest = sorted(
        psutil.process_iter(["pid", "memory_info", "cmdline"]),
        key=lambda p: -(p.info["memory_info"].rss if p.info["memory_info"] else 0),
    )[:3]
    top = "; ".join(
        f"{p.pid} {p.info['memory_info'].rss / 2**30:.1f} GB {' '.join((p.info['cmdline'] or [])[:2])[:60]}"
        for p in largest
        if p.info["memory_info"]
    )
    return f"tmp free {disk:.1f} GB, memory available {mem:.1f} GB, load {os.getloadavg()[0]:.1f}; largest: {top}"


def pytest_runtest_logreport(report):
    """A failure, or a test over five minutes, is told the moment it happens with the machine's state: a run cut
    off by a time limit still shows what failed and why."""
    slow = report.when == "call" and report.duration > 300
    if not (report.failed or slow) or _config is None:
        return
    what = "FAILED" if report.failed else "SLOW"
    lines = [f"[conftest] {what} {report.nodeid} ({report.when}, {report.duration:.0f} s); {_machine_state()}"]
    if report.failed:
        lines += ["  " + x for x in report.longreprtext.splitlines()[-25:]]
    _tell(_config, lines)


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
