"""The rewriting instruction and reply format of question rephrasing, and where the question sits in a row.

The instruction asks for the rewritten problem between two markers; ``parse_rewrite`` reads the reply back.
"""

from __future__ import annotations

import copy
from typing import Any

from megatron_corew.data.prompts import prompt_ids

START_MARKER = "### RESULT_START"
END_MARKER = "### RESULT_END"

# Our wording of the reference task (same rules, same reply format). --instruction_file swaps in any other text.
DEFAULT_INSTRUCTION = f"""Rewrite the math problem below so that it reads like a different problem: use new \
wording and place it in a different real-world setting, but keep the mathematics, every given quantity and the \
final answer exactly as they are.

Rules:
1. The math and the answer must not change.
2. Change the words and the scenario; do not reuse the original's phrases or sentence structure.
3. The rewritten problem must be natural, clear and solvable on its own.
4. Reply only with the block below, in exactly this format, with nothing before or after it:

{START_MARKER}
ORIGINAL:
<the original problem>
REWRITE:
<the rewritten problem>
{END_MARKER}
"""


class RewriteParseError(ValueError):
    pass


def parse_rewrite(text: str) -> tuple[str, str]:
    """(original, rewritten) from a model reply. A ``<think>...</think>`` block is ignored; the first
    RESULT_START and the first RESULT_END after it delimit the block; it splits at the first ``REWRITE:``."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        raise RewriteParseError("the reply is an unfinished <think> block")
    start = text.find(START_MARKER)
    if start < 0:
        raise RewriteParseError(f"no {START_MARKER} marker")
    end = text.find(END_MARKER, start + len(START_MARKER))
    if end < 0:
        raise RewriteParseError(f"no {END_MARKER} marker after {START_MARKER}")
    block = text[start + len(START_MARKER) : end].strip()
    if "REWRITE:" not in block:
        raise RewriteParseError("no REWRITE: section between the markers")
    head, rewritten = block.split("REWRITE:", 1)
    original = head.strip()
    if original.startswith("ORIGINAL:"):
        original = original[len("ORIGINAL:") :].strip()
    rewritten = rewritten.strip()
    if not rewritten:
        raise RewriteParseError("the REWRITE: section is empty")
    return original, rewritten


def question_of(value: Any) -> tuple[str, int | None]:
    """The question in a prompt cell: the last user message of a chat list (its position), or a plain string."""
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            value = value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the question is empty")
        return value, None
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a list of chat messages or a string (got {type(value).__name__})")
    for j in range(len(value) - 1, -1, -1):
        m = value[j]
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if not isinstance(c, str) or not c.strip():
                raise ValueError(f"user message {j} has no text")
            return c, j
    raise ValueError("no user message in the prompt")


def with_question(value: Any, position: int | None, question: str):
    """The prompt cell with its question replaced (every other message and field kept)."""
    if position is None:
        return question
    new = copy.deepcopy(list(value))
    new[position] = dict(new[position], content=question)
    return new


def rewrite_prompt(
    tokenizer, question: str, instruction: str = DEFAULT_INSTRUCTION, enable_thinking: bool = False
) -> list[int]:
    messages = [{"role": "user", "content": instruction + "\n" + question.strip()}]
    return prompt_ids(tokenizer, messages, enable_thinking=enable_thinking)
