"""LaTeX answers to expression trees: presentation noise stripped, then a small recursive-descent parser.

Hand-written rather than sympy or ``eval`` so that one comparison costs microseconds, never runs code, and its
depth is bounded: it runs on every rollout and before every vote.
"""

from __future__ import annotations

import re
from fractions import Fraction

from megatron_corew.rewards.grading.notation import names_a_value, rewrite_notation, strip_unit_words

__all__ = ["clean_latex", "ExprParser", "ParseError", "RE_COMMAND"]

# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------

_TEXT_WRAPPERS = r"(?:text|textbf|textrm|textit|mathrm|mathbf|mathit|mbox|boldsymbol|operatorname)"
_RE_UNIT_TAIL = re.compile(r"^(.*?\S)\s*\\" + _TEXT_WRAPPERS + r"\{[^{}]*\}(?:\^\{?\d\}?)?\s*$")
_RE_TEXT_AND = re.compile(r"\\" + _TEXT_WRAPPERS + r"\{\s*(?:and|or)\s*\}")
_RE_TEXT_UNWRAP = re.compile(r"\\" + _TEXT_WRAPPERS + r"\{([^{}]*)\}")
_RE_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
# A "\\" row break is matched whole first, so its second backslash plus a space is not "\ ".
_RE_SPACING = re.compile(r"\\\\|\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\\displaystyle(?![a-zA-Z])")
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
    "dfrac": "\\frac",
    "cfrac": "\\frac",
    "lt": "<",
    "gt": ">",
    "leqq": "≤",
    "geqq": "≥",
    "tfrac": "\\frac",
    "lbrace": "\\{",
    "rbrace": "\\}",
    "circ": "",
    "degree": "",
    "leqslant": "≤",
    "geqslant": "≥",
    "leq": "≤",
    "geq": "≥",
    "le": "≤",
    "ge": "≥",
    "neq": "≠",
    "ne": "≠",
    "cdot": "*",
    "times": "*",
    "ast": "*",
    "div": "/",
    "infty": "∞",
    "emptyset": "∅",
    "varnothing": "∅",
    "pi": "π",
}
RE_COMMAND = re.compile(r"\\([a-zA-Z]+)")


def _rename_command(match: re.Match) -> str:
    return _COMMAND_REPLACEMENTS.get(match.group(1), match.group(0))


def _keep_row_breaks(match: re.Match) -> str:
    return match.group(0) if match.group(0) == "\\\\" else ""


def clean_latex(s: str) -> str:
    """Strip LaTeX presentation noise so that equal answers become equal-looking strings."""
    s = rewrite_notation(s.replace("\n", " "))
    s = _RE_LEFT_RIGHT.sub("", s)
    s = _RE_SPACING.sub(_keep_row_breaks, s)
    for old, new in _SYMBOL_REPLACEMENTS:
        if old in s:
            s = s.replace(old, new)
    s = RE_COMMAND.sub(_rename_command, s)
    s = _RE_TEXT_AND.sub(",", s)
    # Units written as trailing text ("5 \text{ cm}", "3\mbox{ inches}^2") carry no value.
    while True:
        match = _RE_UNIT_TAIL.match(s)
        if not match or _RE_OPERATOR_END.search(match.group(1)) or names_a_value(s[match.end(1) :]):
            break
        s = match.group(1)
    s = _RE_TEXT_UNWRAP.sub(r"\1", s)
    s = s.strip()
    while s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return strip_unit_words(s)


# ---------------------------------------------------------------------------------------------
# Parsing: a tiny LaTeX expression parser (no eval, bounded)
# ---------------------------------------------------------------------------------------------


class ParseError(ValueError):
    """Not an expression this parser understands (the answer is then compared as text)."""


_RE_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<name>[a-zA-Z])"
    r"|(?P<sym>\\\{|\\\}|[-+*/^()\[\]{}!|_,π∞%']))"
)

_GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
    "rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi Omega".split()
)
_FUNCTIONS = frozenset("sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh ln log exp".split())
_MAX_NESTING = 40


def _tokenize(s: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    while pos < len(s):
        match = _RE_TOKEN.match(s, pos)
        if not match:
            if s[pos:].strip() == "":
                break
            raise ParseError(f"unexpected character {s[pos]!r}")
        pos = match.end()
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
    return tokens


class ExprParser:
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
            raise ParseError("unexpected end")
        self.pos += 1
        return tok

    def _expect(self, value: str):
        kind, text = self._take()
        if text != value:
            raise ParseError(f"expected {value!r}, got {text!r}")

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
            raise ParseError(f"trailing input {self._peek()[1]!r}")
        return node

    def _expr(self):
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise ParseError("too deeply nested")
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
        raise ParseError("bad argument")

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
        raise ParseError(f"unexpected token {text!r}")

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
        raise ParseError(f"unknown command \\{name}")

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
