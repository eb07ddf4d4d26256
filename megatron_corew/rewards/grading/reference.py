"""The reference grader: verl's ``math`` reward used by the Co-rewarding runs, quirks included.

Extraction mirrors verl's ``last_boxed_only_string`` + ``remove_boxed``; normalisation is the Hendrycks MATH
``strip_string`` as verl ships it. Pseudo-labels are compared by raw string equality, so any difference here
would change the rewards: the default rewards are the paper's rewards only while this stays exact.
"""

from __future__ import annotations

__all__ = ["extract_boxed_answer", "normalize_answer", "is_equiv_reference"]

_BOXED_SPACE = "\\boxed "


def extract_boxed_answer(text: str) -> str:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``; "" if none.

    Mirrors the reference precisely, because pseudo-labels are compared by raw string equality
    and any difference in extraction would change the rewards:

    * if ``"\\boxed "`` (space form) occurs ANYWHERE, the answer is everything after its last
      occurrence up to the next ``$`` (even if a braced box follows it; not stripped);
    * otherwise the last ``\\boxed`` (or, when there is none, the last ``\\fbox``) is brace-matched
      from its position; no closing brace -> "";
    * a box keyword not directly followed by ``{`` (``\\boxed\\frac12``) -> "".

    Deviation: the reference's ``remove_boxed`` rejects ``\\fbox{...}`` (the reward becomes 0);
    the spec asks for its content, so we return it.
    """
    if not text:
        return ""
    if _BOXED_SPACE in text:
        return text.rsplit(_BOXED_SPACE, 1)[1].split("$", 1)[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return ""
    depth = 0
    end = -1
    for pos in range(start, len(text)):
        ch = text[pos]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                end = pos
                break
    if end < 0:
        return ""
    boxed = text[start : end + 1]
    for opener in ("\\boxed{", "\\fbox{"):
        if boxed.startswith(opener):
            return boxed[len(opener) : -1]
    return ""


class _NormalizationError(ValueError):
    """The reference normaliser would have raised: callers fall back to raw comparison."""


def _ref_sqrt_braces(s: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}`` (one character only, like the reference)."""
    if "\\sqrt" not in s:
        return s
    head, *tails = s.split("\\sqrt")
    out = [head]
    for tail in tails:
        if not tail:
            raise _NormalizationError("\\sqrt at end of string")
        if tail[0] == "{":
            out.append("\\sqrt" + tail)
        else:
            out.append("\\sqrt{" + tail[0] + "}" + tail[1:])
    return "".join(out)


def _ref_frac_braces(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}`` (reference rules)."""
    head, *tails = s.split("\\frac")
    out = [head]
    for tail in tails:
        out.append("\\frac")
        if not tail:
            raise _NormalizationError("\\frac at end of string")
        if tail[0] == "{":
            out.append(tail)
            continue
        if len(tail) < 2:
            return s  # the reference gives up and keeps the input unchanged
        num, second, rest = tail[0], tail[1], tail[2:]
        if second != "{":
            out.append("{" + num + "}{" + second + "}" + rest)
        else:
            out.append("{" + num + "}" + second + rest)
    return "".join(out)


def _ref_slash_to_frac(s: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when both sides are plain integers printed canonically."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        num, den = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    if s != f"{num}/{den}":
        return s
    return "\\frac{" + str(num) + "}{" + str(den) + "}"


def _reference_strip(s: str) -> str:
    """The reference normaliser; raises ``_NormalizationError`` where the reference raises."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    if "\\text{ " in s:  # "\text{ " only ever introduces units in MATH
        pieces = s.split("\\text{ ")
        if len(pieces) != 2:
            raise _NormalizationError("several unit blocks")
        s = pieces[0]
    # Twice, as the reference does (its second pass catches a "\\%" formed by the first);
    # a bare "%" is kept, as in the reference.
    s = s.replace("\\%", "").replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _ref_sqrt_braces(s)
    s = s.replace(" ", "")
    s = _ref_frac_braces(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _ref_slash_to_frac(s)


def normalize_answer(ans: str) -> str:
    """Hendrycks-MATH normal form of an answer; the input unchanged if the reference would fail.

    Matches the reference exactly (e.g. only ``\\%`` is removed, not a bare ``%``; only the
    exact string ``0.5`` becomes ``\\frac{1}{2}``). Never raises.
    """
    if ans is None:
        return ""
    try:
        return _reference_strip(str(ans))
    except Exception:
        return str(ans)


def is_equiv_reference(pred: str, gt: str) -> bool:
    """Reference equivalence: equal normal forms, or raw equality if either normalisation fails."""
    if pred is None or gt is None:
        return False
    try:
        return _reference_strip(pred) == _reference_strip(gt)
    except Exception:
        return pred == gt
