"""The combination matrix (tools/combination_matrix.py, docs/COMBINATIONS.md).

Default tier: the pairwise design covers every pair of values of any two factors (checked against an enumeration
written here) and holds no refused pair; a hand-checked small design. e2e (2-rank cells also dist): each design cell
launched as a user would either trains (finite metrics, reward variance and a non-zero gradient) or is refused in one
line naming its flags; the twin runs give the same loss and gradient norm."""

from __future__ import annotations

import itertools
import json
import math
import os

import pytest
from helpers import RunAhead

from tools import combination_matrix as cm
from tools.pairwise import all_pairs

# cells that fail on this tree: id -> the one-line reproduction (python tools/combination_matrix.py --only ID)
KNOWN_FAILURES: dict[str, str] = {}


def test_pairwise_design_covers_every_pair():
    rows, excluded = all_pairs(cm.FACTORS, cm.forbidden)
    for (f1, vs1), (f2, vs2) in itertools.combinations(cm.FACTORS.items(), 2):
        for v1, v2 in itertools.product(vs1, vs2):
            covered = any(r[f1] == v1 and r[f2] == v2 for r in rows)
            assert covered != (((f1, v1), (f2, v2)) in excluded), (f1, v1, f2, v2)
    for r in rows:
        assert list(r) == list(cm.FACTORS) and all(r[f] in cm.FACTORS[f] for f in r)
        assert not any(cm.forbidden({a: r[a], b: r[b]}) for a, b in itertools.combinations(r, 2)), r
    assert all_pairs(cm.FACTORS, cm.forbidden)[0] == rows  # deterministic
    assert len(rows) == 24  # 6 methods x 4 layouts need 24: the factor order reaches the minimum


def test_refused_pairs_are_the_documented_refusals():
    """Written out by hand from megatron_corew/flags.py's rules: prefetch needs a teacher; Self-Harmony refuses
    async rollouts; pipelined rollouts (async or prefetch) refuse dynamic sampling and --colocate."""
    _, excluded = all_pairs(cm.FACTORS, cm.forbidden)
    no_teacher = ("gt", "corewarding_1", "entropy", "self_harmony")
    want = {(("prefetch", "on"), ("method", m)) for m in no_teacher}
    want |= {(("method", "self_harmony"), ("async", s)) for s in ("s1", "fa2")}
    want |= {(("async", s), ("dynamic", "on")) for s in ("s1", "fa2")}
    want |= {(("async", s), ("offload", "colocate")) for s in ("s1", "fa2")}
    want |= {(("prefetch", "on"), ("dynamic", "on")), (("prefetch", "on"), ("offload", "colocate"))}
    unordered = lambda pairs: {frozenset(p) for p in pairs}  # noqa: E731 (a pair's order is the factors')
    assert unordered(excluded) == unordered(want) and len(excluded) == len(want)
    _, refusals = cm.design()
    assert unordered(c.pair for c in refusals) == unordered(want)
    for c in refusals:  # each refusal cell refuses for its pair only
        others = [(a, b) for a, b in itertools.combinations(c.values.items(), 2) if (a, b) != c.pair]
        assert not any(cm.forbidden(dict(p)) for p in others), c.id


def test_method_traits_follow_the_registry():
    """The tool's method tuples (which get --train-data-rephrased, which may prefetch, which refuse async) are the
    registered specs' traits."""
    from megatron_corew.rewards import get_method

    specs = {m: get_method(m) for m in cm.METHODS}
    assert set(cm.TEACHER_METHODS) == {m for m, s in specs.items() if s.teacher}
    assert set(cm.REPHRASED_METHODS) == {m for m, s in specs.items() if s.paired_views and not s.reframes}
    assert set(cm.REFRAMING_METHODS) == {m for m, s in specs.items() if s.reframes}


def test_matrix_methods_cover_every_loop_trait():
    """Every registered method runs the loop as one of the matrix's methods does: its traits (paired views, online
    reframing, EMA teacher, sequence statistics read from the policy) are one matrix method's, so the matrix's
    cells exercise its path. A new method with a new trait must join METHODS."""
    from megatron_corew.rewards import get_method
    from megatron_corew.rewards.spec import method_names

    def traits(name):
        s = get_method(name)
        return (s.paired_views, s.reframes, s.teacher, bool(s.sequence_stats))

    covered = {traits(m) for m in cm.METHODS}
    assert {m: traits(m) for m in method_names() if traits(m) not in covered} == {}


def test_pairwise_small_example():
    """Three two-valued factors: the greedy fill gives the 4-row orthogonal array (worked out by hand in order:
    000, then 0 1 -> C 1, 1 0 -> C 1, 1 1 -> C 0); with (A 1, B 1) forbidden that pair is excluded, not covered."""
    f = {"A": [0, 1], "B": [0, 1], "C": [0, 1]}
    rows, excluded = all_pairs(f)
    assert [tuple(r.values()) for r in rows] == [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
    assert excluded == {}
    rows, excluded = all_pairs(f, lambda r: "no" if r.get("A") == 1 and r.get("B") == 1 else None)
    assert list(excluded) == [(("A", 1), ("B", 1))]
    assert not any(r["A"] == 1 and r["B"] == 1 for r in rows)
    assert {(r["A"], r["C"]) for r in rows} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_classify_refusal_and_failures(tmp_path):
    """The classifier on hand-written outputs: one error line and exit 2 is a refusal; a traceback, two error
    lines or a timeout are failures."""
    cell = cm.design()[0][0]
    assert cm.classify(cell, 2, "warn\nerror: --x does not apply to --y\n", str(tmp_path))[0] == "refused"
    assert cm.classify(cell, 2, "error: a\nerror: b\n", str(tmp_path))[0].startswith("FAIL")
    torchrun = "Traceback (most recent call last):\n[rank0]: AssertionError: no SP\n[rank1]: AssertionError: no SP\n"
    torchrun += "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
    assert cm.classify(cell, 1, torchrun, str(tmp_path))[::2] == ("FAIL: traceback (rc 1)", "AssertionError: no SP")
    assert cm.classify(cell, None, "", str(tmp_path))[0] == "FAIL: timeout"


# ------------------------------------------------------------------------------------------------- the runs (e2e)
DESIGN, REFUSALS = cm.design()
ALL_CELLS = DESIGN + cm.extra_cells() + REFUSALS
_RUNS = RunAhead("test_cell", "cell")


def _result(cell: cm.Cell, bundle: dict, root) -> cm.Result:
    return _RUNS.submit(cell.id + cell.tag, lambda: cm.run_cell(cell, bundle, str(root))).result()


def _marks(cell: cm.Cell) -> list:
    marks = [pytest.mark.e2e] + ([pytest.mark.dist] if cell.nproc > 1 else [])
    if cell.id in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[cell.id]))
    return marks


@pytest.mark.parametrize("cell", [pytest.param(c, id=c.id, marks=_marks(c)) for c in ALL_CELLS])
def test_cell(cell, warm_bundle, tmp_path_factory, request):
    root = str(tmp_path_factory.getbasetemp() / "cells")
    r = _RUNS.result(request, lambda c: c.id + c.tag, lambda c: cm.run_cell(c, warm_bundle, root))
    assert r.outcome == cell.expect, f"{r.outcome}: {r.line}\n{cm.reproduction(cell)}"


@pytest.mark.e2e
@pytest.mark.dist
@pytest.mark.parametrize("twin", cm.TWINS, ids=[t.factor for t in cm.TWINS])
def test_twin(twin, warm_bundle, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "cells"
    base = None
    for c in (c for c in DESIGN if cm.twin_candidate(twin, c)):
        base = cm.twin_base(twin, [_result(c, warm_bundle, root)])
        if base:
            break
    assert base is not None, f"no design cell with {twin.factor} {twin.base_value} trained"
    other = _result(cm.twin_cell(twin, base.cell), warm_bundle, root)
    ok, why = cm.compare(twin, base, other)
    assert ok, f"{twin.name}: {why}\n{cm.reproduction(base.cell)}\n{cm.reproduction(other.cell)}"


def _fake_run(root, grads, rewards, losses=None):
    """A run directory as train_rl.py writes it: metrics.jsonl and one rollout dump per step (one prompt)."""
    os.makedirs(os.path.join(root, "rollouts"))
    with open(os.path.join(root, "metrics.jsonl"), "w") as f:
        for s, g in enumerate(grads, 1):
            f.write(json.dumps({"step": s, "train/grad_norm": g, "train/loss": (losses or grads)[s - 1]}) + "\n")
            with open(os.path.join(root, "rollouts", f"step_{s:06d}.jsonl"), "w") as d:
                for r in rewards[s - 1]:
                    d.write(json.dumps({"index": 0, "view": 0, "reward": r, "response": "x"}) + "\n")
    return str(root)


def test_classify_trained_runs(tmp_path):
    """Hand-made run directories: reward variance with a gradient trains; reward variance with a zero gradient,
    a NaN, or no step with any reward variance are failures."""
    cell = cm.design()[0][0]
    good = _fake_run(tmp_path / "a", [0.0, 0.5], [[1, 1], [0, 1]])
    outcome, steps, _ = cm.classify(cell, 0, "", good, steps=2)
    assert outcome == "trained" and [s["reward_std_max"] for s in steps] == [0.0, 0.5]
    zero = _fake_run(tmp_path / "b", [0.5, 0.0], [[0, 1], [0, 1]])
    assert cm.classify(cell, 0, "", zero, steps=2)[0] == "FAIL: zero gradient at step 2 despite reward variance"
    nan = _fake_run(tmp_path / "c", [0.5, float("nan")], [[0, 1], [0, 1]])
    assert cm.classify(cell, 0, "", nan, steps=2)[0].startswith("FAIL: non-finite metrics at step 2")
    flat = _fake_run(tmp_path / "d", [0.1, 0.1], [[1, 1], [0, 0]])
    assert cm.classify(cell, 0, "", flat, steps=2)[0].startswith("FAIL: no step with reward variance")
    assert cm.classify(cell, 0, "", good, steps=3)[0] == "FAIL: 2 of 3 steps logged"


def test_compare_twins(tmp_path):
    """Bitwise twins differ at one ulp; tolerance twins pass within it and stop at the first differing rollout."""
    cell = cm.design()[0][0]
    a = _fake_run(tmp_path / "a", [0.5, 0.25], [[0, 1], [0, 1]])
    b = _fake_run(tmp_path / "b", [0.5, math.nextafter(0.25, 1)], [[0, 1], [0, 1]])
    ra, rb = (cm.Result(cell, "trained", 0.0, 0.0, cm.read_steps(d)) for d in (a, b))
    bitwise, tolerant = cm.TWINS[1], cm.TWINS[0]
    assert bitwise.bitwise and not tolerant.bitwise
    assert cm.compare(bitwise, ra, rb) == (False, "step 2 loss: 0.25 vs 0.25000000000000006")
    assert cm.compare(tolerant, ra, rb)[0]
    assert cm.compare(bitwise, ra, ra) == (True, "steps 1,2 equal (bitwise)")


def test_torchrun_refusal_is_a_refusal(tmp_path):
    """torchrun exits 1 with its own traceback when a rank exits 2 (and stops the other one, -15): still the
    refusal's one line; a rank that crashed (exit 1) stays a failure."""
    cell = cm.extra_cells()[0]
    ranks = "error: --sequence-parallel needs Transformer Engine\nerror: --sequence-parallel needs Transformer Engine\n"
    launcher = "Traceback (most recent call last):\n  File x\nChildFailedError:\n  exitcode  : -15\n  exitcode  : 2\n"
    outcome, _, line = cm.classify(cell, 1, ranks + launcher, str(tmp_path))
    assert (outcome, line) == ("refused", "error: --sequence-parallel needs Transformer Engine")
    crashed = launcher.replace(": 2", ": 1")
    assert cm.classify(cell, 1, ranks + crashed, str(tmp_path))[0].startswith("FAIL")
