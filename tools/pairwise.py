"""Greedy all-pairs (pairwise) test design: a short list of rows in which every pair of values of any two factors
appears at least once. Deterministic: the same factors give the same rows (no randomness, ordered ties).

Used by tools/combination_matrix.py; the coverage check is tests/test_combination_matrix.py."""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Sequence

Pair = tuple[tuple[str, object], tuple[str, object]]


def required_pairs(factors: dict[str, Sequence], forbidden: Callable[[dict], str | None]):
    """All value pairs of two different factors, split into those a valid row can hold and the excluded ones
    (``forbidden`` names the reason for a partial row it refuses)."""
    need: list[Pair] = []
    excluded: dict[Pair, str] = {}
    for f1, f2 in combinations(factors, 2):
        for v1 in factors[f1]:
            for v2 in factors[f2]:
                pair = ((f1, v1), (f2, v2))
                why = forbidden({f1: v1, f2: v2})
                if why:
                    excluded[pair] = why
                else:
                    need.append(pair)
    return need, excluded


def _pairs_of(row: dict) -> set[Pair]:
    names = list(row)
    return {((a, row[a]), (b, row[b])) for i, a in enumerate(names) for b in names[i + 1 :]}


def all_pairs(
    factors: dict[str, Sequence], forbidden: Callable[[dict], str | None] = lambda row: None
) -> tuple[list[dict], dict[Pair, str]]:
    """Rows (dicts factor -> value, in the order of ``factors``) covering every allowed pair, and the excluded
    pairs with their reasons. ``forbidden(partial_row)`` returns a reason or None; the rule must be pairwise
    (a row is valid when each of its pairs is) so that the greedy fill never paints itself into a corner.

    Each row starts from the first uncovered pair, then fills the remaining factors one by one with the value
    that covers the most still-uncovered pairs together with the values already chosen (first value on ties)."""
    order = list(factors)
    need, excluded = required_pairs(factors, forbidden)
    uncovered = set(need)
    rows = []
    while uncovered:
        (f1, v1), (f2, v2) = next(p for p in need if p in uncovered)
        row = {f1: v1, f2: v2}
        for f in order:
            if f in row:
                continue
            best, best_gain = None, -1
            for v in factors[f]:
                trial = {**row, f: v}
                if any(forbidden({a: trial[a], f: v}) for a in row):
                    continue
                gain = sum(((a, trial[a]), (f, v)) in uncovered or ((f, v), (a, trial[a])) in uncovered for a in row)
                if gain > best_gain:
                    best, best_gain = v, gain
            if best_gain < 0:
                raise ValueError(f"no value of {f} fits {row}; the forbidden rule is not pairwise")
            row[f] = best
        row = {f: row[f] for f in order}
        uncovered -= _pairs_of(row)
        rows.append(row)
    return rows, excluded
