"""Answer extraction and grading for boxed math answers.

Two levels of strictness live here:

* the *reference* path (``extract_boxed_answer``, ``normalize_answer``, ``is_equiv_reference``)
  reproduces the verl ``math`` reward used by the Co-rewarding reference runs, quirks included,
  so that our default rewards are the paper's rewards;
* the *improved* path (``answers_equivalent``) adds numeric / structural / light symbolic
  equivalence with a small hand-written parser: bounded input, no ``eval``, no sympy, cached,
  so it is cheap enough to run on every rollout and to cluster answers before voting.

``GraderPool`` grades many (response, ground truth) pairs in worker processes with a per-item
time limit, so a pathological answer can never stall a training step.
"""

from __future__ import annotations

import cmath
import concurrent.futures as cf
import math
import multiprocessing
import os
import re
import signal
import threading
import time
from fractions import Fraction
from functools import lru_cache

__all__ = [
    "extract_boxed_answer",
    "normalize_answer",
    "is_equiv_reference",
    "answers_equivalent",
    "grade",
    "grade_answer",
    "GraderPool",
    "clear_caches",
]

# Answers longer than this skip the parser (only the reference comparison runs): bounds the cost
# of one comparison and the parser's recursion depth.
MAX_PARSE_CHARS = 400

# ---------------------------------------------------------------------------------------------
# Reference extraction (verl `last_boxed_only_string` + `remove_boxed` behaviour)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Reference normalisation (Hendrycks MATH `strip_string` as shipped in verl)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Improved equivalence: cleaning
# ---------------------------------------------------------------------------------------------

_TEXT_WRAPPERS = r"(?:text|textbf|textrm|textit|mathrm|mathbf|mathit|mbox|boldsymbol|operatorname)"
_RE_UNIT_TAIL = re.compile(r"^(.*?\S)\s*\\" + _TEXT_WRAPPERS + r"\{[^{}]*\}(?:\^\{?\d\}?)?\s*$")
_RE_TEXT_AND = re.compile(r"\\" + _TEXT_WRAPPERS + r"\{\s*(?:and|or)\s*\}")
_RE_TEXT_UNWRAP = re.compile(r"\\" + _TEXT_WRAPPERS + r"\{([^{}]*)\}")
_RE_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
# A "\\" row break is matched whole first, so its second backslash plus a space is not "\ ".
_RE_SPACING = re.compile(r"\\\\|\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\\displaystyle(?![a-zA-Z])")
_RE_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_RE_SCIENTIFIC = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))[eE]([+-]?\d+)$")
_RE_OPERATOR_END = re.compile(r"[-+*/^=<>≤≥≠(\[{,]$")

# Plain-text spellings mapped onto the single characters the parser understands.
_SYMBOL_REPLACEMENTS = (
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("°", ""),
    ("\\%", "%"),
    ("\\$", ""),
    ("$", ""),
    ("{,}", ","),
    ("<=", "≤"),
    (">=", "≥"),
    ("−", "-"),
    ("×", "*"),
    ("÷", "/"),
    ("√", "\\sqrt"),
)
# LaTeX commands renamed as whole words (so "\le" never eats the start of "\left").
_COMMAND_REPLACEMENTS = {
    "dfrac": "\\frac", "tfrac": "\\frac", "lbrace": "\\{", "rbrace": "\\}",
    "circ": "", "degree": "", "leqslant": "≤", "geqslant": "≥", "leq": "≤", "geq": "≥",
    "le": "≤", "ge": "≥", "neq": "≠", "ne": "≠", "cdot": "*", "times": "*", "ast": "*",
    "div": "/", "infty": "∞", "emptyset": "∅", "varnothing": "∅", "pi": "π",
}
_RE_COMMAND = re.compile(r"\\([a-zA-Z]+)")


def _rename_command(match: re.Match) -> str:
    return _COMMAND_REPLACEMENTS.get(match.group(1), match.group(0))


def _keep_row_breaks(match: re.Match) -> str:
    return match.group(0) if match.group(0) == "\\\\" else ""


def _clean(s: str) -> str:
    """Strip LaTeX presentation noise so that equal answers become equal-looking strings."""
    s = s.strip().replace("\n", " ")
    s = _RE_LEFT_RIGHT.sub("", s)
    s = _RE_SPACING.sub(_keep_row_breaks, s)
    for old, new in _SYMBOL_REPLACEMENTS:
        if old in s:
            s = s.replace(old, new)
    s = _RE_COMMAND.sub(_rename_command, s)
    s = _RE_TEXT_AND.sub(",", s)
    # Units written as trailing text ("5 \text{ cm}", "3\mbox{ inches}^2") carry no value.
    while True:
        match = _RE_UNIT_TAIL.match(s)
        if not match or _RE_OPERATOR_END.search(match.group(1)):
            break
        s = match.group(1)
    s = _RE_TEXT_UNWRAP.sub(r"\1", s)
    s = s.strip()
    while s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s


# ---------------------------------------------------------------------------------------------
# Improved equivalence: a tiny LaTeX expression parser (no eval, bounded)
# ---------------------------------------------------------------------------------------------


class _ParseError(ValueError):
    """Not an expression this parser understands (the answer is then compared as text)."""


_RE_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<name>[a-zA-Z])"
    r"|(?P<sym>\\\{|\\\}|[-+*/^()\[\]{}!|_,π∞%']))"
)

_GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
    "rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi Omega".split()
)
_FUNCTIONS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh ln log exp".split()
)
_MAX_NESTING = 40


def _tokenize(s: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    while pos < len(s):
        match = _RE_TOKEN.match(s, pos)
        if not match:
            if s[pos:].strip() == "":
                break
            raise _ParseError(f"unexpected character {s[pos]!r}")
        pos = match.end()
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
    return tokens


class _ExprParser:
    """Recursive-descent parser from a cleaned LaTeX string to a tuple AST.

    AST nodes: ("num", Fraction), ("var", name), ("const", "pi"|"e"|"inf"), ("add"|"sub"|"mul"|
    "div"|"pow", a, b), ("neg", a), ("fact", a), ("root", a, index|None), ("abs", a),
    ("func", name, a), ("log", a, base), ("binom", n, k).
    """

    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    # -- token helpers -------------------------------------------------------------------------
    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def _take(self):
        tok = self._peek()
        if tok[0] is None:
            raise _ParseError("unexpected end")
        self.pos += 1
        return tok

    def _expect(self, value: str):
        kind, text = self._take()
        if text != value:
            raise _ParseError(f"expected {value!r}, got {text!r}")

    def _take_single_digit(self):
        """LaTeX arguments without braces are one character: ``\\frac12``, ``x^23``."""
        kind, text = self.tokens[self.pos]
        if len(text) > 1:
            self.tokens[self.pos] = ("num", text[1:])
        else:
            self.pos += 1
        return ("num", Fraction(text[0]))

    # -- grammar -------------------------------------------------------------------------------
    def parse(self):
        node = self._expr()
        if self.pos != len(self.tokens):
            raise _ParseError(f"trailing input {self._peek()[1]!r}")
        return node

    def _expr(self):
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise _ParseError("too deeply nested")
        node = self._term()
        while self._peek()[1] in ("+", "-"):
            op = self._take()[1]
            rhs = self._term()
            node = ("add" if op == "+" else "sub", node, rhs)
        self.depth -= 1
        return node

    def _starts_atom(self) -> bool:
        kind, text = self._peek()
        if kind in ("num", "name"):
            return True
        if kind == "cmd":
            return True
        return text in ("(", "{", "π", "∞")

    def _term(self):
        node = self._signed()
        while True:
            text = self._peek()[1]
            if text in ("*", "/"):
                self._take()
                rhs = self._signed()
                node = ("mul" if text == "*" else "div", node, rhs)
            elif self._starts_atom():
                rhs = self._power()
                node = self._implicit_product(node, rhs)
            else:
                return node

    @staticmethod
    def _implicit_product(left, right):
        """Juxtaposition multiplies, except integer + numeric fraction: a mixed number (2\\frac12)."""
        is_int = lambda n: n[0] == "num" and n[1].denominator == 1  # noqa: E731
        if right[0] == "div" and right[1][0] == "num" and right[2][0] == "num":
            if is_int(left):
                return ("add", left, right)
            if left[0] == "neg" and is_int(left[1]):
                return ("neg", ("add", left[1], right))
        return ("mul", left, right)

    def _signed(self):
        text = self._peek()[1]
        if text == "-":
            self._take()
            return ("neg", self._signed())
        if text == "+":
            self._take()
            return self._signed()
        return self._power()

    def _power(self):
        base = self._postfix()
        if self._peek()[1] == "^":
            self._take()
            exponent = self._exponent()
            return ("pow", base, exponent)
        return base

    def _exponent(self):
        text = self._peek()[1]
        if text == "{":
            return self._group()
        if text == "-":
            self._take()
            return ("neg", self._exponent())
        if self._peek()[0] == "num":
            return self._take_single_digit()
        return self._postfix()

    def _postfix(self):
        node = self._atom()
        while self._peek()[1] == "!":
            self._take()
            node = ("fact", node)
        return node

    def _group(self):
        self._expect("{")
        node = self._expr()
        self._expect("}")
        return node

    def _argument(self):
        """Argument of \\frac / \\sqrt: a braced group or a single character."""
        kind, text = self._peek()
        if text == "{":
            return self._group()
        if kind == "num":
            return self._take_single_digit()
        if kind == "name" or text in ("π",) or kind == "cmd":
            return self._atom()
        raise _ParseError("bad argument")

    def _atom(self):
        kind, text = self._take()
        if kind == "num":
            return ("num", Fraction(text))
        if kind == "name":
            if text == "e":
                return ("const", "e")
            return self._subscripted(text)
        if text == "π":
            return ("const", "pi")
        if text == "∞":
            return ("const", "inf")
        if text == "(":
            node = self._expr()
            self._expect(")")
            return node
        if text == "{":
            node = self._expr()
            self._expect("}")
            return node
        if text == "|":
            node = self._expr()
            self._expect("|")
            return ("abs", node)
        if kind == "cmd":
            return self._command(text[1:])
        raise _ParseError(f"unexpected token {text!r}")

    def _subscripted(self, name: str):
        if self._peek()[1] != "_":
            return ("var", name)
        self._take()
        if self._peek()[1] == "{":
            self._take()
            parts = []
            while self._peek()[1] != "}":
                parts.append(self._take()[1])
            self._take()
            return ("var", name + "_" + "".join(parts))
        return ("var", name + "_" + self._take()[1])

    def _command(self, name: str):
        if name == "frac":
            num = self._argument()
            den = self._argument()
            return ("div", num, den)
        if name == "sqrt":
            index = None
            if self._peek()[1] == "[":
                self._take()
                index = self._expr()
                self._expect("]")
            return ("root", self._argument(), index)
        if name == "binom":
            return ("binom", self._argument(), self._argument())
        if name in _GREEK:
            return self._subscripted(name)
        if name in _FUNCTIONS:
            return self._function(name)
        raise _ParseError(f"unknown command \\{name}")

    def _function(self, name: str):
        base = None
        if name == "log" and self._peek()[1] == "_":
            self._take()
            base = self._argument()
        power = None
        if self._peek()[1] == "^":
            self._take()
            power = self._exponent()
        if self._peek()[1] in ("(", "{"):
            arg = self._atom()
        else:
            arg = self._power()
        node = ("log", arg, base) if base is not None else ("func", name, arg)
        return ("pow", node, power) if power is not None else node


# ---------------------------------------------------------------------------------------------
# Improved equivalence: evaluation
# ---------------------------------------------------------------------------------------------


class _EvalError(ArithmeticError):
    """Value undefined or too large at this point (e.g. division by zero, overflow)."""


_MAX_EXACT_BITS = 4096


def _exact_root(value: Fraction, degree: int):
    """Exact rational ``degree``-th root of ``value`` or None (sqrt(9/4) = 3/2, sqrt(2) -> None)."""
    if value < 0:
        if degree % 2 == 0:
            return None
        root = _exact_root(-value, degree)
        return None if root is None else -root
    roots = []
    for part in (value.numerator, value.denominator):
        guess = round(part ** (1.0 / degree)) if part.bit_length() < 1000 else None
        if guess is None:
            return None
        for candidate in (guess - 1, guess, guess + 1):
            if candidate >= 0 and candidate**degree == part:
                roots.append(candidate)
                break
        else:
            return None
    return Fraction(roots[0], roots[1])


@lru_cache(maxsize=1 << 16)
def _exact(node):
    """Exact rational value of a constant expression, or None when not rational / too big."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind in ("var", "const", "func", "log"):
        return None
    if kind == "neg":
        value = _exact(node[1])
        return None if value is None else -value
    if kind == "abs":
        value = _exact(node[1])
        return None if value is None else abs(value)
    if kind == "fact":
        value = _exact(node[1])
        if value is None or value.denominator != 1 or not 0 <= value <= 200:
            return None
        return Fraction(math.factorial(int(value)))
    if kind == "binom":
        n, k = _exact(node[1]), _exact(node[2])
        if n is None or k is None or n.denominator != 1 or k.denominator != 1 or not 0 <= n <= 2000:
            return None
        return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
    if kind == "root":
        value = _exact(node[1])
        degree = Fraction(2) if node[2] is None else _exact(node[2])
        if value is None or degree is None or degree.denominator != 1 or not 2 <= degree <= 12:
            return None
        return _exact_root(value, int(degree))
    a, b = _exact(node[1]), _exact(node[2])
    if a is None or b is None:
        return None
    if kind == "add":
        return a + b
    if kind == "sub":
        return a - b
    if kind == "mul":
        return a * b
    if kind == "div":
        return None if b == 0 else a / b
    if kind == "pow":
        return _exact_power(a, b)
    return None


def _exact_power(base: Fraction, exponent: Fraction):
    if exponent.denominator != 1:
        if exponent.denominator > 12:
            return None
        root = _exact_root(base, exponent.denominator)
        if root is None:
            return None
        base, exponent = root, Fraction(exponent.numerator)
    power = int(exponent)
    if base == 0 and power < 0:
        return None
    size = max(base.numerator.bit_length(), base.denominator.bit_length(), 1)
    if abs(power) > 10_000 or size * abs(power) > _MAX_EXACT_BITS:
        return None
    return base**power


_CONSTANTS = {"pi": math.pi, "e": math.e}
_COMPLEX_FUNCTIONS = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan,
    "cot": lambda z: 1 / cmath.tan(z), "sec": lambda z: 1 / cmath.cos(z),
    "csc": lambda z: 1 / cmath.sin(z), "arcsin": cmath.asin, "arccos": cmath.acos,
    "arctan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh,
    "ln": cmath.log, "log": cmath.log10, "exp": cmath.exp,  # bare \log: base 10, as math-verify
}


def _numeric(node, env: dict) -> complex:
    """Complex value at the point ``env`` (complex so that sqrt/log of negatives stay defined)."""
    try:
        return _numeric_unchecked(node, env)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as err:
        raise _EvalError(str(err)) from err


def _numeric_unchecked(node, env: dict) -> complex:
    kind = node[0]
    if kind == "num":
        return complex(node[1])
    if kind == "var":
        return env[node[1]]
    if kind == "const":
        if node[1] == "inf":
            raise _EvalError("infinity inside an expression")
        return complex(_CONSTANTS[node[1]])
    if kind == "neg":
        return -_numeric_unchecked(node[1], env)
    if kind == "abs":
        return complex(abs(_numeric_unchecked(node[1], env)))
    if kind in ("fact", "binom"):
        value = _exact(node)
        if value is None:
            raise _EvalError("factorial of a non-integer")
        return complex(value)
    if kind == "root":
        value = _numeric_unchecked(node[1], env)
        degree = 2 if node[2] is None else _numeric_unchecked(node[2], env)
        if degree == 0:
            raise _EvalError("zeroth root")
        odd_integer = degree.imag == 0 and degree.real == int(degree.real) and int(degree.real) % 2
        if odd_integer and value.imag == 0 and value.real < 0:
            return -complex((-value.real) ** (1 / degree.real))  # real odd root of a negative
        return value ** (1 / degree)
    if kind == "func":
        return _COMPLEX_FUNCTIONS[node[1]](_numeric_unchecked(node[2], env))
    if kind == "log":
        return cmath.log(_numeric_unchecked(node[1], env)) / cmath.log(_numeric_unchecked(node[2], env))
    a = _numeric_unchecked(node[1], env)
    b = _numeric_unchecked(node[2], env)
    if kind == "add":
        return a + b
    if kind == "sub":
        return a - b
    if kind == "mul":
        return a * b
    if kind == "div":
        return a / b
    if kind == "pow":
        if abs(b) > 1e4:
            raise _EvalError("exponent too large")
        if b.imag == 0 and b.real == int(b.real) and a.imag == 0:
            return complex(a.real ** int(b.real))  # keeps (-2)^3 exactly real
        return a**b
    raise _EvalError(f"unknown node {kind}")


@lru_cache(maxsize=1 << 16)
def _free_variables(node) -> frozenset:
    if node[0] == "var":
        return frozenset((node[1],))
    found = frozenset()
    for child in node[1:]:
        if isinstance(child, tuple):
            found |= _free_variables(child)
    return found


def _close(x: complex, y: complex, rel: float) -> bool:
    if not (cmath.isfinite(x) and cmath.isfinite(y)):
        return False
    return abs(x - y) <= max(rel * max(abs(x), abs(y)), 1e-12)


# Deterministic evaluation points for symbolic comparison: irrational-looking, distinct per
# variable, avoiding the integers and simple fractions where cancellations happen by accident.
_SAMPLE_POINTS = (
    (0.5377, 1.8339, -2.2588, 0.8622, 0.3188, -1.3077, -0.4336, 0.3426),
    (3.5784, 2.7694, -1.3499, 3.0349, 0.7254, -0.0631, 0.7147, -0.2050),
    (-0.1241, 1.4897, 1.4090, 1.4172, 0.6715, -1.2075, 0.7172, 1.6302),
    (0.4889, 1.0347, 0.7269, -0.3034, 0.2939, -0.7873, 0.8884, -1.1471),
)


def _infinity_sign(node):
    if node == ("const", "inf"):
        return 1
    if node[0] == "neg" and node[1] == ("const", "inf"):
        return -1
    return None


def _same_scalar(a, b) -> bool:
    """Equal as numbers (exactly when both are rational), or as functions on sample points."""
    if a == b:
        return True
    inf_a, inf_b = _infinity_sign(a), _infinity_sign(b)
    if inf_a or inf_b:
        return inf_a == inf_b
    variables = sorted(_free_variables(a) | _free_variables(b))
    if not variables:
        exact_a, exact_b = _exact(a), _exact(b)
        if exact_a is not None and exact_b is not None:
            return exact_a == exact_b
        try:
            return _close(_numeric(a, {}), _numeric(b, {}), 1e-9)
        except _EvalError:
            return False
    agreeing = 0
    for point in _SAMPLE_POINTS:
        env = {
            name: complex(point[i % len(point)] + 0.0137 * (i // len(point)))
            for i, name in enumerate(variables)
        }
        try:
            value_a, value_b = _numeric(a, env), _numeric(b, env)
        except _EvalError:
            continue
        if not (cmath.isfinite(value_a) and cmath.isfinite(value_b)):
            continue
        if not _close(value_a, value_b, 1e-7):
            return False
        agreeing += 1
    return agreeing >= 2


# ---------------------------------------------------------------------------------------------
# Improved equivalence: structure (sets, tuples, intervals, relations, matrices, text)
# ---------------------------------------------------------------------------------------------

_OPENERS = "([{"
_CLOSERS = ")]}"
_RELATIONS = "=<>≤≥≠"
_FLIPPED = {">": "<", "≥": "≤", "<": ">", "≤": "≥", "=": "=", "≠": "≠"}
_RE_VARIABLE = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:\([a-z]\))?$")
_RE_WORD = re.compile(r"[a-zA-Z]{3,}")
_RE_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")
_RE_MATRIX = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)


def _split_top_level(s: str, separators: str):
    """Split on single-character separators outside any brackets. Yields (piece, separator)."""
    depth = 0
    start = 0
    pieces = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif depth == 0 and ch in separators:
            pieces.append((s[start:i], ch))
            start = i + 1
        i += 1
    pieces.append((s[start:], None))
    return pieces


def _outer_bracket_spans_all(s: str) -> bool:
    """True when the bracket opening ``s`` is closed by its last character (any bracket kind)."""
    depth = 0
    for i, ch in enumerate(s):
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def _split_cup(s: str):
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif depth == 0 and s.startswith("\\cup", i):
            pieces.append(s[start:i])
            start = i + 4
        i += 1
    pieces.append(s[start:])
    return pieces


def _text_form(s: str) -> str:
    s = s.lower().replace(" ", "").replace("{", "").replace("}", "").replace("\\", "")
    if len(s) == 3 and s[0] == "(" and s[2] == ")":
        s = s[1]
    return s


@lru_cache(maxsize=1 << 16)
def _parse_value(s: str):
    """Structured value of a cleaned answer; see ``_same_value`` for how kinds compare."""
    s = s.strip()
    if not s:
        return ("text", "")
    if _RE_THOUSANDS.match(s):
        s = s.replace(",", "")
    scientific = _RE_SCIENTIFIC.match(s)
    if scientific:
        mantissa, power = Fraction(scientific.group(1)), int(scientific.group(2))
        if abs(power) <= 300:
            return ("expr", ("num", mantissa * Fraction(10) ** power))
    if s == "∅":
        return ("set_of", ())
    plus_minus = _RE_PLUS_MINUS.findall(s)
    if len(plus_minus) == 1:  # "3 \pm \sqrt2" is the pair of both signs
        first, second = ("+", "-") if plus_minus[0] == "\\pm" else ("-", "+")
        return ("set_of", (_parse_value(_RE_PLUS_MINUS.sub(first, s)), _parse_value(_RE_PLUS_MINUS.sub(second, s))))
    matrix = _RE_MATRIX.match(s)
    if matrix:
        rows = [row for row in re.split(r"\\\\", matrix.group(2)) if row.strip()]
        return ("matrix", tuple(tuple(_parse_value(cell) for cell in row.split("&")) for row in rows))
    pieces = _split_cup(s)
    if len(pieces) > 1:
        return ("set_of", tuple(_parse_value(p) for p in pieces))
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        items = [p for p, _ in _split_top_level(inner, ",")] if inner.strip() else []
        return ("set_of", tuple(_parse_value(p) for p in items))
    if s[0] in "([" and s[-1] in ")]" and _outer_bracket_spans_all(s):
        items = [p for p, _ in _split_top_level(s[1:-1], ",")]
        if len(items) == 1:
            return _parse_value(items[0])
        return ("seq", s[0] + s[-1], tuple(_parse_value(p) for p in items))
    items = _split_top_level(s, ",;")
    if len(items) > 1:
        return ("set_of", tuple(_parse_value(p) for p, _ in items if p.strip()))
    member = re.match(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+)\s*\\in\s*(.+)$", s)
    if member:
        return _parse_value(member.group(1))
    sides = _split_top_level(s, _RELATIONS)
    if len(sides) > 1:
        return _parse_relation(sides)
    return _parse_scalar(s)


def _parse_relation(sides):
    values = [piece.strip() for piece, _ in sides]
    ops = [op for _, op in sides[:-1]]
    if len(ops) == 1 and ops[0] == "=" and _RE_VARIABLE.match(values[0]):
        return _parse_value(values[1])  # "x = 5" -> 5, "y = 2x+1" -> 2x+1
    if any(not v for v in values):
        return ("text", _text_form("".join(v + (o or "") for v, o in sides)))
    parsed = [_parse_value(v) for v in values]
    if all(op in (">", "≥") for op in ops):  # write every chain with "<"-type relations
        parsed.reverse()
        ops = [_FLIPPED[op] for op in reversed(ops)]
    interval = _relation_as_interval(ops, parsed)
    return interval if interval is not None else ("rel", tuple(ops), tuple(parsed))


_INFINITY = ("expr", ("const", "inf"))
_MINUS_INFINITY = ("expr", ("neg", ("const", "inf")))


def _relation_as_interval(ops, parsed):
    """A one-variable inequality as the interval it describes: ``-2 <= x < 7`` -> ``[-2, 7)``."""
    if not all(op in ("<", "≤") for op in ops):
        return None
    is_variable = lambda value: value[0] == "expr" and value[1][0] == "var"  # noqa: E731
    opening = {"<": "(", "≤": "["}
    closing = {"<": ")", "≤": "]"}
    if len(ops) == 2 and is_variable(parsed[1]):
        return ("seq", opening[ops[0]] + closing[ops[1]], (parsed[0], parsed[2]))
    if len(ops) == 1 and is_variable(parsed[0]):
        return ("seq", "(" + closing[ops[0]], (_MINUS_INFINITY, parsed[1]))
    if len(ops) == 1 and is_variable(parsed[1]):
        return ("seq", opening[ops[0]] + ")", (parsed[0], _INFINITY))
    return None


def _parse_scalar(s: str):
    percent = False
    if s.endswith("%"):
        percent, s = True, s[:-1].rstrip()
    if "%" in s or _RE_WORD.search(_RE_COMMAND.sub(" ", s)):
        return ("text", _text_form(s + ("%" if percent else "")))
    try:
        node = _ExprParser(s).parse()
    except (_ParseError, RecursionError, ValueError, ZeroDivisionError):
        return ("text", _text_form(s + ("%" if percent else "")))
    return ("pct" if percent else "expr", node)


def _same_unordered(xs, ys) -> bool:
    if len(xs) != len(ys):
        return False
    unmatched = list(ys)
    for x in xs:
        for j, y in enumerate(unmatched):
            if _same_value(x, y):
                del unmatched[j]
                break
        else:
            return False
    return True


def _same_value(x, y) -> bool:
    """Compare two parsed answers.

    * ``expr``: numerically / symbolically equal.
    * ``pct`` (a trailing percent sign): ``50%`` equals ``50`` (MATH convention, the reference
      drops ``\\%``) AND ``0.5`` (its value, as math-verify accepts); two percents compare values.
    * ``seq`` (tuples and intervals): same brackets, same length, equal in order, so ``[1,2)`` is
      not ``(1,2)`` and ``(1,2)`` is not ``(2,1)``.
    * ``set_of`` (``\\{..\\}``, unbracketed lists, unions): equal as multisets, in any order.
    * ``rel``: same relation chain (``x > 3`` equals ``3 < x``); one-variable inequalities are
      parsed as intervals, so ``-2 \\le x < 7`` equals ``[-2, 7)`` and ``x > 3`` equals ``(3, \\infty)``.
    * a one-element set equals its element; ``a \\pm b`` is the set of both signs.
    * ``text``: case-insensitive equality after removing spaces and braces.
    """
    kind_x, kind_y = x[0], y[0]
    if kind_x == "pct" or kind_y == "pct":
        if kind_x == kind_y:
            return _same_scalar(x[1], y[1])
        pct, other = (x, y) if kind_x == "pct" else (y, x)
        if other[0] != "expr":
            return False
        return _same_scalar(pct[1], other[1]) or _same_scalar(("div", pct[1], ("num", Fraction(100))), other[1])
    if kind_x != kind_y:
        for single, other in ((x, y), (y, x)):  # "\{-2\}" is the answer "-2"
            if single[0] == "set_of" and len(single[1]) == 1 and other[0] != "set_of":
                return _same_value(single[1][0], other)
        return False
    if kind_x == "expr":
        return _same_scalar(x[1], y[1])
    if kind_x == "text":
        return x[1] == y[1]
    if kind_x == "seq":
        return x[1] == y[1] and len(x[2]) == len(y[2]) and all(map(_same_value, x[2], y[2]))
    if kind_x == "set_of":
        return _same_unordered(x[1], y[1])
    if kind_x == "rel":
        if x[1] != y[1] or len(x[2]) != len(y[2]):
            return False
        if all(map(_same_value, x[2], y[2])):
            return True
        symmetric = len(x[1]) == 1 and x[1][0] in ("=", "≠")
        return symmetric and all(map(_same_value, x[2], reversed(y[2])))
    if kind_x == "matrix":
        return (
            len(x[1]) == len(y[1])
            and all(len(rx) == len(ry) for rx, ry in zip(x[1], y[1]))
            and all(_same_value(cx, cy) for rx, ry in zip(x[1], y[1]) for cx, cy in zip(rx, ry))
        )
    return False


@lru_cache(maxsize=1 << 16)
def _parsed_answer(raw: str):
    return _parse_value(_clean(raw))


@lru_cache(maxsize=1 << 16)
def _answers_equivalent_cached(a: str, b: str) -> bool:
    if is_equiv_reference(a, b):
        return True
    if len(a) > MAX_PARSE_CHARS or len(b) > MAX_PARSE_CHARS:
        return False
    try:
        return _same_value(_parsed_answer(a), _parsed_answer(b))
    except (RecursionError, ArithmeticError, ValueError, TypeError, KeyError, IndexError):
        return False


def answers_equivalent(a: str, b: str) -> bool:
    """Improved equivalence: reference match, else numeric / structural / symbolic equality.

    Fast (microseconds to tens of microseconds per pair, cached) and bounded: inputs longer
    than ``MAX_PARSE_CHARS`` only get the reference comparison, the parser never evaluates code,
    exact arithmetic refuses huge powers. Symmetric. Empty answers are never equivalent.
    """
    if a is None or b is None:
        return False
    a, b = str(a).strip(), str(b).strip()
    if not a or not b:
        return False
    if a == b:
        return True
    if a > b:  # symmetric, so one cache entry serves both orders
        a, b = b, a
    return _answers_equivalent_cached(a, b)


def clear_caches() -> None:
    """Drop memoised parses and comparisons (benchmarks use it to time cold work)."""
    for cached in (_answers_equivalent_cached, _parsed_answer, _parse_value, _exact, _free_variables):
        cached.cache_clear()


# ---------------------------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------------------------

GRADE_MODES = ("reference", "equiv")


def grade(response_text: str, ground_truth: str, mode: str = "reference") -> float:
    """1.0 if the last boxed answer of ``response_text`` matches ``ground_truth``, else 0.0.

    ``mode="reference"`` is the paper's grader (normalised string equality); ``"equiv"`` uses
    ``answers_equivalent``. No boxed answer scores 0.0.
    """
    return grade_answer(extract_boxed_answer(response_text or ""), ground_truth, mode)


def grade_answer(answer: str, ground_truth: str | None, mode: str = "reference") -> float:
    """:func:`grade` for an answer already extracted from its box: 1.0 if it matches ``ground_truth``, else 0.0.
    Empty (or blank) answers and missing ground truths score 0.0."""
    if mode not in GRADE_MODES:
        raise ValueError(f"unknown grading mode {mode!r}; expected one of {GRADE_MODES}")
    if not (answer or "").strip() or ground_truth is None:
        return 0.0
    if mode == "reference":
        return 1.0 if is_equiv_reference(answer, ground_truth) else 0.0
    return 1.0 if answers_equivalent(answer, ground_truth) else 0.0


# Test hook: lets tests make one item slow inside a worker process (a monkeypatch in the parent
# would not reach a spawned worker). Inactive unless the environment variable is set.
TEST_SLEEP_ENV = "COREW_GRADER_TEST_SLEEP_S"
TEST_SLEEP_PREFIX = "<<corew-grader-test-sleep>>"


class _ItemTimeout(Exception):
    """Raised by SIGALRM inside ``_grade_chunk`` when one item exceeds its time limit."""


def _on_alarm(signum, frame):
    raise _ItemTimeout()


def _grade_one(response_text: str, ground_truth: str, mode: str) -> float:
    if response_text.startswith(TEST_SLEEP_PREFIX) and os.environ.get(TEST_SLEEP_ENV):
        time.sleep(float(os.environ[TEST_SLEEP_ENV]))
    return grade(response_text, ground_truth, mode)


def _grade_chunk(pairs, mode: str, timeout_s: float):
    """Grade a chunk; returns (scores, number of timed-out items).

    The per-item limit uses SIGALRM, which only works in a process's main thread: that is where
    pool workers run tasks. Elsewhere (inline grading from a helper thread) items run unlimited.
    """
    use_alarm = (
        timeout_s
        and timeout_s > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm) if use_alarm else None
    scores, timeouts = [], 0
    try:
        for response_text, ground_truth in pairs:
            try:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, timeout_s)
                try:
                    score = _grade_one(response_text, ground_truth, mode)
                finally:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except _ItemTimeout:
                score, timeouts = 0.0, timeouts + 1
            except Exception:
                score = 0.0
            scores.append(score)
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, previous_handler)
    return scores, timeouts


class GraderPool:
    """Grade many (response, ground truth) pairs in worker processes with per-item time limits.

    * Works from any thread (workers are started with ``spawn`` by default, which is safe in a
      process that already runs threads or CUDA).
    * Items are sent in chunks so that inter-process overhead is paid per chunk, not per item.
    * An item over ``timeout_s`` scores 0.0 and is counted in ``num_timeouts``. If a worker is
      stuck somewhere SIGALRM cannot interrupt, a global deadline kills the pool, the unfinished
      items score 0.0 (counted too) and a fresh pool is started on the next call.
    * ``workers=0`` grades inline in the calling process (limits apply in the main thread only).
    """

    def __init__(self, workers: int = 4, chunk_size: int | None = None, start_method: str = "spawn",
                 deadline_slack_s: float = 60.0):
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.workers = workers
        self.chunk_size = chunk_size
        self.start_method = start_method
        self.deadline_slack_s = deadline_slack_s
        self.num_timeouts = 0
        self.last_num_timeouts = 0
        self._executor: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _get_executor(self) -> cf.ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            if self._executor is None:
                context = multiprocessing.get_context(self.start_method)
                self._executor = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
            return self._executor

    def _chunks(self, pairs):
        size = self.chunk_size or max(1, min(512, math.ceil(len(pairs) / (4 * self.workers))))
        return [pairs[i : i + size] for i in range(0, len(pairs), size)]

    def grade_many(self, pairs, mode: str = "reference", timeout_s: float = 5.0) -> list[float]:
        """Scores in the order of ``pairs``; see the class docstring for timeout semantics."""
        if mode not in GRADE_MODES:
            raise ValueError(f"unknown grading mode {mode!r}; expected one of {GRADE_MODES}")
        pairs = [(str(r or ""), "" if g is None else str(g)) for r, g in pairs]
        if not pairs:
            self.last_num_timeouts = 0
            return []
        if self.workers == 0:
            scores, timeouts = _grade_chunk(pairs, mode, timeout_s)
            self._count_timeouts(timeouts)
            return scores
        executor = self._get_executor()
        chunks = self._chunks(pairs)
        futures = [executor.submit(_grade_chunk, chunk, mode, timeout_s) for chunk in chunks]
        deadline = (timeout_s or 0) * math.ceil(len(pairs) / self.workers) + self.deadline_slack_s
        cf.wait(futures, timeout=deadline)
        scores, timeouts, pool_broken = [], 0, False
        for chunk, future in zip(chunks, futures):
            if future.done() and future.exception() is None:
                chunk_scores, chunk_timeouts = future.result()
                scores.extend(chunk_scores)
                timeouts += chunk_timeouts
            else:
                pool_broken = True
                scores.extend([0.0] * len(chunk))
                timeouts += len(chunk)
        if pool_broken:
            self._discard_executor()
        self._count_timeouts(timeouts)
        return scores

    def _count_timeouts(self, timeouts: int) -> None:
        with self._lock:
            self.last_num_timeouts = timeouts
            self.num_timeouts += timeouts

    def _discard_executor(self) -> None:
        """Kill the workers of a pool that missed its deadline (or broke) so none keeps running."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        for process in list(getattr(executor, "_processes", {}).values()):
            try:
                process.kill()
            except Exception:
                pass
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "GraderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
