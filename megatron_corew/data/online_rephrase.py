"""Self-Harmony's reframer: the policy itself rewrites each training question during the step, with the same
engine and the rephrasing instruction of ``data/rewrite_format.py``, and the rewrite becomes the pair's second view.

Every rewrite goes through the rephrasing quality gate (``data/rephrase_check.py``): a reply that does not parse,
a rewrite the gate flags, or one longer than ``--max-prompt-length`` is replaced by the original question (the
pair's second view is then the same question sampled again: never a wrong one). The verdict counts are logged.
The reframer's own generations are not trained on: only the solver's rollouts on both views carry a reward
(docs/ALGORITHMS.md, Self-Harmony).
"""

from __future__ import annotations

from dataclasses import replace

from megatron_corew.data.dataset import Example, render_prompt
from megatron_corew.data.rephrase_check import check_pair
from megatron_corew.data.rewrite_format import RewriteParseError, parse_rewrite, question_of, rewrite_prompt


def reframe_prompt_ids(tokenizer, examples: list[Example]) -> list[list[int]]:
    """The reframer's prompt for each example: the rephrasing instruction followed by the bare question."""
    return [rewrite_prompt(tokenizer, question_of(ex.messages)[0]) for ex in examples]


def reframed_examples(
    tokenizer, examples: list[Example], replies: list[str], max_prompt_length: int | None = None
) -> tuple[list[Example], dict]:
    """The second view of each example from the reframer's reply, and the gate's counts as metrics."""
    counts = {"kept": 0, "unparsed": 0, "flagged": 0, "too_long": 0}
    reasons: dict[str, int] = {}
    out = []
    for ex, reply in zip(examples, replies):
        question, position = question_of(ex.messages)
        try:
            _, rewritten = parse_rewrite(reply)
        except RewriteParseError:
            counts["unparsed"] += 1
            out.append(ex)
            continue
        verdict = check_pair(question, rewritten)
        if verdict.verdict != "kept":
            counts["flagged"] += 1
            for r in verdict.reasons:
                reasons[r] = reasons.get(r, 0) + 1
            out.append(ex)
            continue
        messages = list(ex.messages)
        messages[position] = dict(messages[position], content=rewritten)
        text, ids = render_prompt(tokenizer, messages)
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            counts["too_long"] += 1
            out.append(ex)
            continue
        counts["kept"] += 1
        out.append(replace(ex, messages=messages, prompt_ids=ids, prompt_text=text))
    metrics = {f"reframe/{k}": float(v) for k, v in counts.items()}
    metrics.update({f"reframe/flagged_{r}": float(n) for r, n in sorted(reasons.items())})
    return out, metrics


def reframe(run, examples: list[Example], step: int, round: int = 0) -> tuple[list[Example], dict]:
    """Rank 0 asks the policy engine for one rewrite per example (seeded by step and round, so a resumed run
    writes the same ones); every rank gets the same second views and counts."""
    from megatron_corew.policy import parallel

    a, replies = run.args, None
    ids = reframe_prompt_ids(run.tokenizer, examples) if parallel.is_rank0() else []
    # ORIGINAL + REWRITE + markers
    gens = run.generator.generate_now("reframe", step, round, ids, max_new_tokens=2 * a.max_prompt_length + 32)
    if parallel.is_rank0():
        replies = [run.tokenizer.decode(g.response_ids, skip_special_tokens=True) for g in gens]
    replies = parallel.broadcast_object(replies)
    return reframed_examples(run.tokenizer, examples, replies, a.max_prompt_length)
