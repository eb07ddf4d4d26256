"""Answer grading: reference extraction and MATH normalisation, the improved equivalence, and the graders.

``reference`` is the paper's grader; ``latex``, ``values`` and ``structures`` parse and compare answers for the
improved ``equivalence``; ``workers`` runs grading inline, in a process pool or on Ray workers under one
per-item time limit.
"""

from megatron_corew.rewards.grading.equivalence import (
    GRADE_MODES,
    answers_equivalent,
    clear_caches,
    grade,
    grade_answer,
)
from megatron_corew.rewards.grading.reference import extract_boxed_answer, is_equiv_reference, normalize_answer
from megatron_corew.rewards.grading.workers import (
    DEFAULT_ITEM_TIMEOUT_S,
    Grader,
    InlineGrader,
    ProcessPoolGrader,
    RayGrader,
    grade_answers,
)

__all__ = [
    "extract_boxed_answer",
    "normalize_answer",
    "is_equiv_reference",
    "answers_equivalent",
    "grade",
    "grade_answer",
    "GRADE_MODES",
    "clear_caches",
    "DEFAULT_ITEM_TIMEOUT_S",
    "grade_answers",
    "Grader",
    "InlineGrader",
    "ProcessPoolGrader",
    "RayGrader",
]
