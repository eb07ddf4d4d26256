"""The answer extractor: one selectable rule turning a response into the answer that rewards, votes and
evaluation compare (``--answer-format``).

The default, ``boxed``, is the reference's last ``\\boxed{}`` (rewards/grading/reference.py) and changes nothing.
The others let a model that does not box still be scored:

    boxed        content of the last \\boxed{...}
    gsm8k        what follows the last "#### " on its line
    answer-is    what follows the last "the answer is" (case-insensitive) up to the end of the sentence
    last-number  the last number in the text (thousands commas dropped, a trailing period removed)
    regex:PAT    group 1 of the last match of PAT (the whole match when PAT has no group)

Several formats separated by commas are tried in order, the first non-empty answer wins
(``boxed,answer-is,last-number``); ``regex:`` takes the rest of the string, so it comes last.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from megatron_corew.rewards.grading.reference import extract_boxed_answer

__all__ = ["FORMATS", "DEFAULT_FORMAT", "get_extractor", "parse_format"]

DEFAULT_FORMAT = "boxed"
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_GSM8K = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"the (?:final )?answer is:?\s*([^\n]*?)\s*(?:\.(?:\s|$)|\n|$)", re.I)
_LAST_NUMBER = re.compile(_NUMBER)


def _clean_number(text: str) -> str:
    text = text.strip().rstrip(".")
    return text.replace(",", "") if re.fullmatch(_NUMBER, text) else text


def _gsm8k(text: str) -> str:
    found = _GSM8K.findall(text or "")
    return _clean_number(found[-1]) if found else ""


def _answer_is(text: str) -> str:
    found = _ANSWER_IS.findall(text or "")
    if not found:
        return ""
    answer = found[-1].strip()
    for left, right in (("$", "$"), ("\\(", "\\)")):  # inline math around the answer
        if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right) - 1:
            answer = answer[len(left) : len(answer) - len(right)].strip()
    return _clean_number(answer)


def _last_number(text: str) -> str:
    found = _LAST_NUMBER.findall(text or "")
    return _clean_number(found[-1]) if found else ""


FORMATS: dict[str, Callable[[str], str]] = {
    "boxed": extract_boxed_answer,
    "gsm8k": _gsm8k,
    "answer-is": _answer_is,
    "last-number": _last_number,
}


def _regex(pattern: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def extract(text: str) -> str:
        matches = list(compiled.finditer(text or ""))
        if not matches:
            return ""
        last = matches[-1]
        return (last.group(1) if compiled.groups else last.group(0)) or ""

    return extract


def parse_format(spec: str) -> list[Callable[[str], str]]:
    """The extractors of ``spec`` in order; ValueError (one line) for an unknown name or a bad regex."""
    out: list[Callable[[str], str]] = []
    rest = (spec or "").strip()
    if not rest:
        raise ValueError("empty answer format")
    while rest:
        if rest.startswith("regex:"):
            try:
                out.append(_regex(rest[len("regex:") :]))
            except re.error as e:
                raise ValueError(f"bad regex {rest[len('regex:') :]!r}: {e}") from None
            break
        name, _, rest = rest.partition(",")
        name = name.strip()
        if name not in FORMATS:
            raise ValueError(f"unknown answer format {name!r}; choose from {sorted(FORMATS)} or regex:PATTERN")
        out.append(FORMATS[name])
        rest = rest.strip()
    return out


def get_extractor(spec: str = DEFAULT_FORMAT) -> Callable[[str], str]:
    """text -> answer for ``spec``: the first non-empty answer of its formats ("" when none finds one)."""
    chain = parse_format(spec)
    if len(chain) == 1:
        return chain[0]

    def extract(text: str) -> str:
        for fn in chain:
            answer = fn(text)
            if answer and answer.strip():
                return answer
        return ""

    return extract
