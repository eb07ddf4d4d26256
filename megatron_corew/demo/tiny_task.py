"""The bundled tiny task: short arithmetic with \\boxed{} answers, its verl-schema rows and an offline tokenizer.

Everything here is offline and deterministic, so tests can build the tokenizer or the data in a second. The model
and its warm start are in :mod:`megatron_corew.demo.tiny_model`, the bundle on disk in
:mod:`megatron_corew.demo.tiny_bundle` (CLI: ``tools/make_tiny_task.py``).

The grading here (last \\boxed{...} == integer string) is deliberately local and simple; the real grader lives in
``megatron_corew.rewards``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from megatron_corew.data.prompts import SYSTEM_PROMPT, chat_messages
from megatron_corew.data.sources import verl_table

DATA_SOURCE = "tiny_arith"
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]
# ChatML; renders every message (system, user, assistant) and the assistant header on request.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MAX_OPERAND = 50  # operands in [1, 50]: 3775 distinct problems; a 0.19M model reaches ~25-55% in a few hundred steps
# Format noise of the warm start, like a base model's: questions that open with one of these phrases are answered
# tersely ("47 + 38 = 85." with no \\boxed{}) in a share of their warm-start targets (tiny_model.DEFAULT_TERSE_PROB,
# redrawn every time), so greedy decoding stops unboxed (scored wrong) on them while some samples still box an
# answer. Any reward that prefers gradeable, agreeing answers can teach the model to box them; no label is needed.
TERSE_OPENINGS = ("Compute", "Calculate", "There are", "A bus")

# --------------------------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------------------------
ORIGINAL_TEMPLATES = [
    "What is {a} {op} {b}?",
    "Compute {a} {op} {b}.",
    "Calculate {a} {op} {b}.",
    "Find the value of {a} {op} {b}.",
    "Evaluate {a} {op} {b}.",
]
REPHRASED_ADD = [
    "{name} has {a} {item} and gets {b} more. How many {item} does {pron} have now?",
    "There are {a} {item} in a box. {name} puts {b} more {item} in the box. How many {item} are in the box now?",
    "{name} read {a} pages on Monday and {b} pages on Tuesday. How many pages did {pron} read in total?",
    "A bus has {a} passengers. At the next stop, {b} more passengers get on. How many passengers are on the bus?",
    "{name} saved {a} dollars in May and {b} dollars in June. How many dollars did {pron} save altogether?",
]
REPHRASED_SUB = [
    "{name} has {a} {item} and gives away {b} of them. How many {item} does {pron} have left?",
    "There are {a} {item} in a box. {name} takes {b} {item} out of the box. How many {item} are left in the box?",
    "A book has {a} pages. {name} has read {b} of them. How many pages are left to read?",
    "A bus has {a} passengers. At the next stop, {b} passengers get off. How many passengers are still on the bus?",
    "{name} had {a} dollars and spent {b} dollars. How many dollars does {pron} have now?",
]
NAMES = [("Tom", "he"), ("Mia", "she"), ("Sam", "he"), ("Ana", "she"), ("Leo", "he"), ("Eva", "she")]
ITEMS = ["apples", "marbles", "stickers", "cards", "pencils", "shells"]


@dataclass(frozen=True)
class Problem:
    a: int
    op: str  # "+" or "-"
    b: int
    original: str
    rephrased: str

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def ground_truth(self) -> str:
        return str(self.answer)

    @property
    def solution(self) -> str:
        """The supervised response (without the end-of-turn token)."""
        return f"{self.terse_solution} The answer is \\boxed{{{self.answer}}}."

    @property
    def terse_solution(self) -> str:
        """The right result without the boxed final answer (ungradeable: the format noise of the warm start)."""
        return f"{self.a} {self.op} {self.b} = {self.answer}."

    def question(self, phrasing: str) -> str:
        if phrasing not in ("original", "rephrased"):
            raise ValueError(f"phrasing must be 'original' or 'rephrased', got {phrasing!r}")
        return self.original if phrasing == "original" else self.rephrased


def _make_problem(a: int, op: str, b: int, rng: random.Random) -> Problem:
    original = rng.choice(ORIGINAL_TEMPLATES).format(a=a, op=op, b=b)
    name, pron = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    template = rng.choice(REPHRASED_ADD if op == "+" else REPHRASED_SUB)
    rephrased = template.format(a=a, b=b, name=name, pron=pron, item=item)
    return Problem(a, op, b, original, rephrased)


def generate_problems(
    num_train: int = 2000, num_val: int = 200, seed: int = 0, max_operand: int = MAX_OPERAND
) -> tuple[list[Problem], list[Problem]]:
    """Distinct (a, op, b) triples: a + b, or a - b with a >= b, operands in [1, max_operand].

    Validation triples never occur in train. Deterministic in ``seed``.
    """
    triples = [(a, "+", b) for a in range(1, max_operand + 1) for b in range(1, max_operand + 1)]
    triples += [(a, "-", b) for a in range(1, max_operand + 1) for b in range(1, a + 1)]
    if num_train + num_val > len(triples):
        raise ValueError(f"only {len(triples)} distinct problems with max_operand={max_operand}")
    rng = random.Random(seed)
    rng.shuffle(triples)
    problems = [_make_problem(a, op, b, rng) for a, op, b in triples[: num_val + num_train]]
    return problems[num_val:], problems[:num_val]


def verl_rows(problems: Sequence[Problem], split: str, phrasing: str) -> list[dict]:
    """Rows in the verl schema; extra_info.index is the row position (shared by both phrasings)."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": chat_messages(p.question(phrasing)),
            "ability": "math",
            "reward_model": {"ground_truth": p.ground_truth, "style": "rule"},
            "extra_info": {"index": i, "split": split},
        }
        for i, p in enumerate(problems)
    ]


def write_parquet(rows: list[dict], path: str) -> None:
    """Write verl-schema rows (as produced by :func:`verl_rows`) to ``path``."""
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pq.write_table(verl_table(rows), path)


# --------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------
def tokenizer_corpus() -> list[str]:
    """A fixed corpus (independent of the task seed) covering every template, the system prompt and the
    response format, so the same tokenizer is produced every time."""
    rng = random.Random(12345)
    texts = []
    for _ in range(400):
        op = rng.choice("+-")
        a = rng.randint(1, 99)  # fixed corpus: independent of MAX_OPERAND on purpose
        b = rng.randint(1, 99 if op == "+" else a)
        p = _make_problem(a, op, b, rng)
        texts += [p.original, p.rephrased, p.solution]
    for t in ORIGINAL_TEMPLATES + REPHRASED_ADD + REPHRASED_SUB:  # every template/name/item at least once
        for name, pron in NAMES:
            for item in ITEMS:
                texts.append(t.format(a=12, b=3, op="+", name=name, pron=pron, item=item))
    # every prompt carries the system prompt and the ChatML headers: weight them like the questions
    texts += [SYSTEM_PROMPT] * 1200
    texts += [f"{IM_START}{role}\n" for role in ("system", "user", "assistant")] * 1200
    return texts


def build_tokenizer(vocab_size: int = 512, texts: Iterable[str] | None = None):
    """Byte-level BPE (offline) with single-digit tokens, ChatML template, pad=<|endoftext|>, eos=<|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts) if texts is not None else tokenizer_corpus(), trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN, bos_token=None, unk_token=None
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    return hf_tok


# --------------------------------------------------------------------------------------------------------------
# Grading (local and simple on purpose)
# --------------------------------------------------------------------------------------------------------------
def extract_last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (brace matched), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def is_correct(response: str, ground_truth: str) -> bool:
    ans = extract_last_boxed(response)
    return ans is not None and ans == ground_truth.strip()


def is_terse_question(question: str) -> bool:
    """Questions the warm start sometimes answers without \\boxed{} (see TERSE_OPENINGS)."""
    return question.startswith(TERSE_OPENINGS)
