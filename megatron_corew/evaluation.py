"""Benchmark evaluation on any rollout engine: greedy pass@1, sampled avg@k / pass@k (docs/ALGORITHMS.md section 5).

One code path serves the offline tool (``tools/evaluate.py``) and the in-training validation
(:func:`validation_metrics`, called by ``RLRun.validate``).

* greedy: one greedy response per problem; ``pass@1`` = share graded correct.
* sampled: k responses per problem at ``temperature`` (0.8 by default, the paper's evaluation temperature);
  ``avg@k`` = mean correctness over all k*n responses (= the unbiased pass@1 estimate), ``pass@k`` = share of
  problems with at least one correct response, and ``pass@j`` for smaller j by the unbiased estimator
  1 - C(n-c, j) / C(n, j) (Chen et al. 2021).

Grading uses the ground truth of each example with the project's grader (``reference``: the paper's MATH
normalisation; ``equiv``: the faster, more tolerant checker) on the boxed answers extracted from the responses, by
any :class:`megatron_corew.rewards.grading.Grader` (inline by default, a process pool from ``tools/evaluate.py``).
Every call is deterministic for a fixed seed on a deterministic engine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "evaluate",
    "evaluate_examples",
    "pass_at_k",
    "validation_metrics",
    "results_markdown",
    "response_text",
    "EVAL_TEMPERATURE",
    "EVAL_MAX_NEW_TOKENS",
]

EVAL_TEMPERATURE = 0.8  # sampled evaluation: tools/evaluate.py --temperature and --val-temperature
EVAL_MAX_NEW_TOKENS = 3072  # tools/evaluate.py --max-new-tokens and --max-response-length


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (1 - C(n-c, k) / C(n, k))."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def response_text(tokenizer, g) -> str:
    text = g.meta.get("text") if getattr(g, "meta", None) else None
    if text is not None:  # engines that return text (OpenAI-compatible servers) give it as decoded there
        return text
    return tokenizer.decode(g.response_ids, skip_special_tokens=True)


def _majority_accuracy(answers: list[str], gts: list[str], k: int, grading: str, grader=None) -> float:
    """maj@k: share of problems whose majority-voted answer (exact string, ties to the first seen, empty answers
    never vote; the training-time vote of the self-supervised methods) is graded correct."""
    from megatron_corew.rewards.grading import grade_answer
    from megatron_corew.rewards.voting import majority_vote

    votes = [majority_vote(answers[i * k : (i + 1) * k]) for i in range(len(gts))]
    if grader is not None:
        return sum(grader.grade(votes, list(gts), grading)) / len(gts)
    return sum(grade_answer(vote, gt, grading) for vote, gt in zip(votes, gts)) / len(gts)


def evaluate_examples(
    engine,
    tokenizer,
    examples: Sequence,
    mode: str = "greedy",
    k: int = 1,
    temperature: float = EVAL_TEMPERATURE,
    top_p: float = 1.0,
    seed: int = 0,
    grading: str = "reference",
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    pass_ks: Sequence[int] | None = None,
    grader=None,
    return_records: bool = False,
    answer_format: str = "boxed",
) -> dict[str, Any]:
    """Metrics of one benchmark. ``examples``: :class:`megatron_corew.data.Example` (prompt_ids, ground_truth);
    ``grader``: a :class:`megatron_corew.rewards.grading.Grader`, an :class:`InlineGrader` when None;
    ``answer_format``: how answers are read from responses (rewards/extract.py, as in training)."""
    from megatron_corew.rewards.extract import get_extractor
    from megatron_corew.rewards.grading import InlineGrader
    from megatron_corew.rollout.base import SamplingParams

    if mode not in ("greedy", "sampled"):
        raise ValueError(f"mode must be 'greedy' or 'sampled', got {mode!r}")
    if mode == "greedy":
        k = 1
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    examples = list(examples)
    n = len(examples)
    if n == 0:
        raise ValueError("no examples to evaluate")
    missing = [i for i, e in enumerate(examples) if e.ground_truth is None]
    if missing:
        raise ValueError(f"{len(missing)} example(s) have no ground truth (first: row {examples[missing[0]].index})")
    params = SamplingParams(
        temperature=temperature if mode == "sampled" else 1.0,
        top_p=top_p if mode == "sampled" else 1.0,
        max_new_tokens=max_new_tokens,
        greedy=mode == "greedy",
        seed=seed,
    )
    t0 = time.perf_counter()
    gens = engine.generate([e.prompt_ids for e in examples for _ in range(k)], params)
    t_gen = time.perf_counter() - t0
    if len(gens) != n * k:
        raise RuntimeError(f"engine returned {len(gens)} generations for {n * k} prompts")
    texts = [response_text(tokenizer, g) for g in gens]
    gts = [examples[i // k].ground_truth for i in range(n * k)]
    t1 = time.perf_counter()
    extract = get_extractor(answer_format)
    answers = [extract(t) for t in texts]
    scores = (grader or InlineGrader()).grade(answers, gts, grading)
    t_grade = time.perf_counter() - t1
    correct = [sum(scores[i * k : (i + 1) * k] or [0.0]) for i in range(n)]
    lengths = [len(g.response_ids) for g in gens]
    out: dict[str, Any] = {
        "mode": mode,
        "n": n,
        "k": k,
        "grading": grading,
        "temperature": None if mode == "greedy" else temperature,
        "top_p": None if mode == "greedy" else top_p,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "response_length": sum(lengths) / len(lengths),
        "truncated_rate": sum(g.finish_reason == "length" for g in gens) / len(gens),
        "answer_format": answer_format,
        "boxed_rate": sum(bool(a.strip()) for a in answers) / len(answers),  # an answer was found
        "generate_seconds": round(t_gen, 3),
        "grade_seconds": round(t_grade, 3),
    }
    if mode == "greedy":
        out["pass@1"] = sum(correct) / n
    else:
        out[f"avg@{k}"] = sum(scores) / len(scores)
        out["pass@1"] = out[f"avg@{k}"]
        out[f"maj@{k}"] = _majority_accuracy(answers, [e.ground_truth for e in examples], k, grading, grader)
        for j in sorted(set(list(pass_ks or []) + [k])):
            if 1 < j <= k:
                out[f"pass@{j}"] = sum(pass_at_k(k, int(round(c)), j) for c in correct) / n
    if return_records:
        out["records"] = [
            {
                "row": examples[i // k].index,
                "sample": i % k,
                "ground_truth": gts[i],
                "answer": answers[i],
                "score": scores[i],
                "response": texts[i],
                "finish_reason": gens[i].finish_reason,
                "response_length": lengths[i],
            }
            for i in range(n * k)
        ]
    return out


def evaluate(
    engine,
    tokenizer,
    benchmarks: Mapping[str, Sequence] | Sequence,
    mode: str = "greedy",
    k: int = 1,
    temperature: float = EVAL_TEMPERATURE,
    seed: int = 0,
    grading: str = "reference",
    **kw,
) -> dict[str, dict[str, Any]]:
    """Evaluate one or more benchmarks: ``{name: examples}`` (a plain sequence is named "default").

    Returns ``{name: metrics}`` with ``pass@1`` (greedy) or ``avg@k``, ``pass@k`` (and ``pass@1`` = avg@k) for
    sampled mode, plus response statistics. Keyword arguments go to :func:`evaluate_examples`.
    """
    if not isinstance(benchmarks, Mapping):
        benchmarks = {"default": benchmarks}
    return {
        name: evaluate_examples(
            engine, tokenizer, exs, mode=mode, k=k, temperature=temperature, seed=seed, grading=grading, **kw
        )
        for name, exs in benchmarks.items()
    }


def validation_metrics(
    engine,
    tokenizer,
    examples: Sequence,
    grading: str = "reference",
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    n_samples: int = 0,
    temperature: float = EVAL_TEMPERATURE,
    prefix: str = "val/",
    seed: int = 1,
    answer_format: str = "boxed",
) -> dict[str, float]:
    """The in-training validation: greedy accuracy (seed 0) and, when ``n_samples`` > 0, sampled avg@k / pass@k
    (top_p 1, ``seed``: the same draws at every evaluation). Keys: ``val/accuracy``, ``val/response_length``,
    ``val/accuracy_avg@k``, ``val/pass@k``, ``val/maj@k``."""
    g = evaluate_examples(
        engine,
        tokenizer,
        examples,
        mode="greedy",
        seed=0,
        grading=grading,
        max_new_tokens=max_new_tokens,
        answer_format=answer_format,
    )
    out = {f"{prefix}accuracy": g["pass@1"], f"{prefix}response_length": g["response_length"]}
    if n_samples:
        s = evaluate_examples(
            engine,
            tokenizer,
            examples,
            mode="sampled",
            k=n_samples,
            temperature=temperature,
            top_p=1.0,
            seed=seed,
            grading=grading,
            max_new_tokens=max_new_tokens,
            answer_format=answer_format,
        )
        out[f"{prefix}accuracy_avg@{n_samples}"] = s[f"avg@{n_samples}"]
        if n_samples > 1:
            out[f"{prefix}pass@{n_samples}"] = s[f"pass@{n_samples}"]
            out[f"{prefix}maj@{n_samples}"] = s[f"maj@{n_samples}"]
    return out


def results_markdown(results: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """A markdown table, one row per benchmark (metrics in percent)."""
    metric_cols: list[str] = []
    for r in results.values():
        for key in r:
            if key.startswith(("pass@", "avg@", "maj@")) and key not in metric_cols:
                metric_cols.append(key)

    def order(c):  # pass@1, then avg@k, then pass@j by j, then maj@k
        kind, j = c.split("@")
        return (0 if c == "pass@1" else 1 if kind == "avg" else 2 if kind == "pass" else 3, int(j))

    metric_cols.sort(key=order)
    head = ["benchmark", "n", "mode", *metric_cols, "resp. len", "boxed", "truncated"]
    lines = ([f"### {title}", ""] if title else []) + [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for name, r in results.items():
        mode = r["mode"] if r["mode"] == "greedy" else f"sampled k={r['k']} T={r['temperature']}"
        cells = [name, str(r["n"]), mode]
        cells += [f"{100 * r[c]:.2f}" if c in r else "" for c in metric_cols]
        cells += [f"{r['response_length']:.1f}", f"{100 * r['boxed_rate']:.1f}%", f"{100 * r['truncated_rate']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
