"""What a reward method is: a ``MethodSpec`` that declares its needs, and the registry the loop looks it up in.

The training loop never compares method names; it asks a spec for traits (does it need ground truth, paired
views, a teacher, sequence statistics; which KL anchor and coefficient). A new method is one module that calls
``register(MethodSpec(...))``; ``--reward-plugin MODULE`` imports such a module before the flags are parsed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Group:
    """The G rollouts sampled for one question view, as the reward methods see them."""

    answers: list[str]  # extracted answers of the policy rollouts ("" = none)
    ground_truth: str | None = None
    view: int = 0  # 0 original question, 1 rephrased (Co-rewarding-I)
    pair_id: int = 0  # ties the two views of one Co-rewarding-I pair
    teacher_answers: list[str] | None = None  # answers of the teacher's rollouts (Co-rewarding-II)
    seq_stats: list[dict] = field(default_factory=list)  # per rollout: statistics named by the spec
    label: str = ""  # the pseudo-label the method chose (voting methods)
    teacher_label: str = ""  # Co-rewarding-III: the teacher's vote on this view (it labels the OTHER view)


@dataclass(frozen=True)
class ScoreOptions:
    """How answers are compared: ``label_matching`` for votes (exact strings as in the reference, or
    equivalence clusters), ``gt_grading`` for ground truth, and the ``grader`` that grades extracted answers
    (inline when None; a process pool or the Ray reward workers otherwise)."""

    label_matching: str = "exact"
    gt_grading: str = "reference"
    grader: object | None = None
    stream: tuple = ()  # (seed, step, round) of the scored rollouts (the run gives (seed,), score_batch the rest)
    flags: tuple = ()  # (dest, value) of the method-specific flags the spec reads (MethodSpec.reads_flags)

    def flag(self, dest: str, default=None):
        return dict(self.flags).get(dest, default)


RewardFn = Callable[[list[Group], ScoreOptions], list[list[float]]]


@dataclass(frozen=True)
class MethodSpec:
    """One reward method and everything the loop needs to know about it (defaults: docs/ALGORITHMS.md)."""

    name: str
    rewards: RewardFn  # groups -> one reward per rollout (may set Group.label)
    kl_coef: float = 0.005  # the reference's KL coefficient for this method
    anchor: str = "initial"  # KL anchor: the frozen initial policy, or "teacher" (EMA copy)
    needs_ground_truth: bool = False  # trains on labels: unlabelled rows are refused at start-up
    paired_views: bool = False  # trains on both views of each pair (--train-data-rephrased)
    reframes: bool = False  # the policy writes the second view online (data/online_rephrase.py), no rephrased file
    teacher: bool = False  # an EMA teacher generates label rollouts every step
    sequence_stats: tuple[str, ...] = ()  # per-rollout policy statistics it reads (entropy, self_certainty)
    pseudo_labels: bool = False  # chooses a label per group: pseudo-label metrics are logged
    summary: str = ""  # one line for --help
    extra_metrics: Callable[[list[Group], str], dict] | None = None  # (groups, gt_grading) -> method's own metrics
    label_matching: str = "exact"  # --label-matching default: raw strings (the reference) or "equiv" clusters
    fixed_label_matching: bool = False  # clusters answers by equivalence whatever --label-matching says
    reads_flags: tuple[str, ...] = ()  # method-specific flags (dests) it reads; refused for every other method

    @property
    def needs_anchor_model(self) -> bool:
        return self.anchor == "teacher" or self.teacher


_REGISTRY: dict[str, MethodSpec] = {}
_BUILTINS = "megatron_corew.rewards.methods"


class RewardMethodError(ValueError):
    """A reward method that cannot be used: a taken name, or rewards that do not fit the rollouts (one line)."""


def origin(spec: MethodSpec) -> str:
    """Where a method comes from, for messages: built in, or the plugin module that defines its reward function."""
    module = getattr(spec.rewards, "__module__", None) or "?"
    return "built in" if module.startswith("megatron_corew.") else f"--reward-plugin {module}"


def _definition(spec: MethodSpec):
    code = getattr(spec.rewards, "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else id(spec.rewards)


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry. A name another definition already holds is refused: a plugin would otherwise
    silently replace a built-in method, or be replaced by it. (The same definition imported twice is fine.)"""
    _load_builtins()
    old = _REGISTRY.get(spec.name)
    if old is not None and _definition(old) != _definition(spec):
        raise RewardMethodError(
            f"reward method {spec.name!r} already exists ({origin(old)}); register the new one under another name"
        )
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtins() -> None:
    importlib.import_module(_BUILTINS)


def method_names() -> tuple[str, ...]:
    _load_builtins()
    return tuple(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"--reward-method {name!r} is not one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def load_plugins(modules) -> None:
    """Import each dotted module path (each registers its methods); any failure is one line and exit code 2."""
    for module in modules or ():
        try:
            importlib.import_module(module)
        except RewardMethodError as e:
            _refuse(f"--reward-plugin {module}: {e}")
        except ImportError as e:
            _refuse(f"--reward-plugin {module}: cannot import it ({e})")
        except Exception as e:  # the plugin's own code raised while it was imported
            _refuse(f"--reward-plugin {module}: importing it raised {type(e).__name__}: {e}")


def _refuse(line: str) -> None:
    import sys

    print(f"error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def checked_rewards(spec: MethodSpec, groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    """``spec.rewards`` with its contract checked: one number per rollout of every group. A method that
    raises or breaks it is one line naming the method and where it comes from (RewardMethodError)."""
    who = f"reward method {spec.name} ({origin(spec)})"
    try:
        rewards = spec.rewards(groups, options)
    except Exception as e:
        if origin(spec) == "built in":  # the built-ins' own errors (graders) keep their types and handling
            raise
        raise RewardMethodError(f"{who} raised {type(e).__name__}: {e}") from None
    try:
        rewards = [[float(r) for r in group] for group in rewards]
    except (TypeError, ValueError) as e:
        raise RewardMethodError(f"{who} must return a list of reward lists of numbers ({e})") from None
    if len(rewards) != len(groups):
        raise RewardMethodError(f"{who} returned rewards for {len(rewards)} groups; the batch has {len(groups)}")
    for k, (group, got) in enumerate(zip(groups, rewards)):
        if len(got) != len(group.answers):
            raise RewardMethodError(
                f"{who} returned {len(got)} rewards for group {k}, which has {len(group.answers)} rollouts; "
                "it must return one per rollout"
            )
    return rewards
