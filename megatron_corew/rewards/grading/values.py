"""Values of parsed expressions: exact rationals where possible, complex floats otherwise.

Exact arithmetic keeps ``100000000000000000001`` distinct from ``10^{20}``; complex evaluation keeps ``sqrt`` and
``log`` of negatives defined. Expressions with variables are compared at fixed sample points, so the result is
deterministic. Every operation is size-bounded, so a power tower fails fast instead of stalling a step.
"""

from __future__ import annotations

import cmath
import math
from fractions import Fraction
from functools import lru_cache

__all__ = ["exact_value", "free_variables", "same_scalar", "proportional", "real_number"]


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
def exact_value(node):
    """Exact rational value of a constant expression, or None when not rational / too big."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind in ("var", "const", "func", "log"):
        return None
    if kind == "neg":
        value = exact_value(node[1])
        return None if value is None else -value
    if kind == "abs":
        value = exact_value(node[1])
        return None if value is None else abs(value)
    if kind == "fact":
        value = exact_value(node[1])
        if value is None or value.denominator != 1 or not 0 <= value <= 200:
            return None
        return Fraction(math.factorial(int(value)))
    if kind == "binom":
        n, k = exact_value(node[1]), exact_value(node[2])
        if n is None or k is None or n.denominator != 1 or k.denominator != 1 or not 0 <= n <= 2000:
            return None
        return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
    if kind == "root":
        value = exact_value(node[1])
        degree = Fraction(2) if node[2] is None else exact_value(node[2])
        if value is None or degree is None or degree.denominator != 1 or not 2 <= degree <= 12:
            return None
        return _exact_root(value, int(degree))
    a, b = exact_value(node[1]), exact_value(node[2])
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
    "sin": cmath.sin,
    "cos": cmath.cos,
    "tan": cmath.tan,
    "cot": lambda z: 1 / cmath.tan(z),
    "sec": lambda z: 1 / cmath.cos(z),
    "csc": lambda z: 1 / cmath.sin(z),
    "arcsin": cmath.asin,
    "arccos": cmath.acos,
    "arctan": cmath.atan,
    "sinh": cmath.sinh,
    "cosh": cmath.cosh,
    "tanh": cmath.tanh,
    "ln": cmath.log,
    "log": cmath.log10,
    "exp": cmath.exp,  # bare \log: base 10, as math-verify
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
        value = exact_value(node)
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
def free_variables(node) -> frozenset:
    if node[0] == "var":
        return frozenset((node[1],))
    found = frozenset()
    for child in node[1:]:
        if isinstance(child, tuple):
            found |= free_variables(child)
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


def same_scalar(a, b) -> bool:
    """Equal as numbers (exactly when both are rational), or as functions on sample points."""
    if a == b:
        return True
    inf_a, inf_b = _infinity_sign(a), _infinity_sign(b)
    if inf_a or inf_b:
        return inf_a == inf_b
    variables = sorted(free_variables(a) | free_variables(b))
    if not variables:
        exact_a, exact_b = exact_value(a), exact_value(b)
        if exact_a is not None and exact_b is not None:
            return exact_a == exact_b
        try:
            return _close(_numeric(a, {}), _numeric(b, {}), 1e-9)
        except _EvalError:
            return False
    agreeing = 0
    for point in _SAMPLE_POINTS:
        env = {name: complex(point[i % len(point)] + 0.0137 * (i // len(point))) for i, name in enumerate(variables)}
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


def proportional(a, b) -> bool:
    """``a = c * b`` for one nonzero constant ``c`` at every sample point: the equations ``a = 0`` and ``b = 0``
    are the same (a line written ``2x+4y-3=0`` or ``y = -x/2 + 3/4``). Needs a variable and three usable points."""
    variables = sorted(free_variables(a) | free_variables(b))
    if not variables:
        return False
    ratios = []
    for point in _SAMPLE_POINTS:
        env = {name: complex(point[i % len(point)] + 0.0137 * (i // len(point))) for i, name in enumerate(variables)}
        try:
            value_a, value_b = _numeric(a, env), _numeric(b, env)
        except _EvalError:
            continue
        if not (cmath.isfinite(value_a) and cmath.isfinite(value_b)):
            continue
        if abs(value_b) < 1e-12 or abs(value_a) < 1e-12:
            return False
        ratios.append(value_a / value_b)
    return len(ratios) >= 3 and all(_close(r, ratios[0], 1e-7) for r in ratios[1:])


def real_number(node):
    """Exact rational, float or +-inf value of a constant real expression, or None (a variable, complex)."""
    sign = _infinity_sign(node)
    if sign:
        return math.inf * sign
    if free_variables(node):
        return None
    exact = exact_value(node)
    if exact is not None:
        return exact
    try:
        value = _numeric(node, {})
    except _EvalError:
        return None
    if not cmath.isfinite(value) or abs(value.imag) > 1e-12:
        return None
    return value.real
