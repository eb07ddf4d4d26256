"""The bundled tiny task: short arithmetic with \\boxed{} answers, an offline tokenizer and a tiny HF model.

Everything here is offline and deterministic. The CLI is ``tools/make_tiny_task.py``; this module holds the
library code so that tests (and other tools) can build the tokenizer or the data without the warm start.

Layout written by :func:`make_tiny_task` (default ``assets/tiny``)::

    data/train.parquet            original phrasing, verl schema (ALGORITHMS.md section 4)
    data/train_rephrased.parquet  row i = a rephrasing of train row i (same ground truth, same extra_info.index)
    data/val.parquet              held-out questions, original phrasing
    data/val_rephrased.parquet    row i = a rephrasing of val row i
    model/                        HF model + tokenizer + generation_config (save_pretrained)
    metrics.json                  warm-start metrics, sizes, settings

The grading here (last \\boxed{...} == integer string) is deliberately local and simple; the real grader lives in
``megatron_corew.rewards``.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

SYSTEM_PROMPT = "Let's think step by step and output the final answer within \\boxed{}."
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
ARCHS = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
MODEL_DIMS = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)
MAX_OPERAND = 50  # operands in [1, 50]: 3775 distinct problems; a 0.19M model reaches ~25-55% in a few hundred steps
DEFAULT_SFT_STEPS = 500
# Format noise of the warm start, like a base model's: questions that open with one of these phrases are answered
# tersely ("47 + 38 = 85." with no \\boxed{}) in this share of their warm-start targets (redrawn every time), so
# greedy decoding stops unboxed (scored wrong) on them while some samples still box an answer. Any reward that
# prefers gradeable, agreeing answers can teach the model to box them; no label is needed for that.
TERSE_OPENINGS = ("Compute", "Calculate", "There are", "A bus")
DEFAULT_TERSE_PROB = 0.6

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


def generate_problems(num_train: int = 2000, num_val: int = 200, seed: int = 0,
                      max_operand: int = MAX_OPERAND) -> tuple[list[Problem], list[Problem]]:
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


def messages_for(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def verl_rows(problems: Sequence[Problem], split: str, phrasing: str) -> list[dict]:
    """Rows in the verl schema; extra_info.index is the row position (shared by both phrasings)."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": messages_for(p.question(phrasing)),
            "ability": "math",
            "reward_model": {"ground_truth": p.ground_truth, "style": "rule"},
            "extra_info": {"index": i, "split": split},
        }
        for i, p in enumerate(problems)
    ]


def verl_schema():
    import pyarrow as pa

    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string())])),
    ])


def write_parquet(rows: list[dict], path: str) -> None:
    """Write verl-schema rows (as produced by :func:`verl_rows`) to ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=verl_schema()), path)


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
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts) if texts is not None else tokenizer_corpus(), trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN,
                                     bos_token=None, unk_token=None)
    hf_tok.chat_template = CHATML_TEMPLATE
    return hf_tok


def render_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Chat-template the messages (with the assistant header) and encode without extra special tokens."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


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


# --------------------------------------------------------------------------------------------------------------
# Model, warm start, evaluation
# --------------------------------------------------------------------------------------------------------------
def build_model(tokenizer, arch: str = "qwen3", seed: int = 0, **dims):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    d = dict(MODEL_DIMS, **dims)
    cfg = AutoConfig.for_model(
        arch, vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids(IM_END), pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32", **d)
    cfg.architectures = [ARCHS[arch]]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    return model.float()


def is_terse_question(question: str) -> bool:
    return question.startswith(TERSE_OPENINGS)


def _sft_items(tokenizer, problems: Sequence[Problem]) -> list[tuple[list[int], list[int], list[int] | None]]:
    """(prompt ids, boxed response ids, terse response ids or None) per problem and phrasing."""
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    items = []
    for p in problems:
        resp = list(tokenizer(p.solution, add_special_tokens=False)["input_ids"]) + [eos]
        terse = list(tokenizer(p.terse_solution, add_special_tokens=False)["input_ids"]) + [eos]
        for phrasing in ("original", "rephrased"):
            q = p.question(phrasing)
            items.append((render_prompt_ids(tokenizer, messages_for(q)), resp, terse if is_terse_question(q) else None))
    return items


def sft_warm_start(model, tokenizer, problems: Sequence[Problem], steps: int, batch_size: int = 64,
                   lr: float = 3e-3, seed: int = 0, log_every: int = 0, log=print, callback=None,
                   terse_prob: float = DEFAULT_TERSE_PROB) -> list[float]:
    """Supervised warm start on both phrasings, loss on response tokens only (incl. <|im_end|>).

    Questions opening with one of :data:`TERSE_OPENINGS` get the terse (unboxed) target with probability
    ``terse_prob`` each time they are drawn. Returns the per-step losses.
    """
    if not 0.0 <= terse_prob <= 1.0:
        raise ValueError(f"terse_prob must be in [0, 1], got {terse_prob}")
    terse_rng = random.Random(seed + 1)

    def target(item):
        prompt, resp, terse = item
        return prompt, terse if terse is not None and terse_rng.random() < terse_prob else resp

    return supervised_finetune(model, tokenizer, _sft_items(tokenizer, problems), steps, target, batch_size=batch_size,
                               lr=lr, seed=seed, log_every=log_every, log=log, callback=callback)


def supervised_finetune(model, tokenizer, items: Sequence, steps: int, target=None, batch_size: int = 64,
                        lr: float = 3e-3, seed: int = 0, log_every: int = 0, log=print, callback=None) -> list[float]:
    """Next-token loss on the response tokens of ``target(item) -> (prompt ids, response ids)`` (identity by
    default), items drawn in seeded random order epoch after epoch. AdamW, linear warm-up over 5% of the steps,
    cosine decay to 10% of lr, grad clip 1.0. Returns the per-step losses."""
    import torch

    target = target or (lambda item: item)
    pad = tokenizer.pad_token_id
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, steps // 20)

    def lr_at(s):
        if s < warm:
            return lr * (s + 1) / warm
        t = (s - warm) / max(1, steps - warm)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    losses = []
    perm, cursor = torch.randperm(len(items), generator=g).tolist(), 0
    for step in range(steps):
        if cursor + batch_size > len(perm):
            perm, cursor = torch.randperm(len(items), generator=g).tolist(), 0
        batch = [target(items[k]) for k in perm[cursor: cursor + batch_size]]
        cursor += batch_size
        L = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), L), pad, dtype=torch.long)
        tgt_mask = torch.zeros((len(batch), L), dtype=torch.bool)
        for row, (p, r) in enumerate(batch):
            seq = p + r
            ids[row, : len(seq)] = torch.tensor(seq)
            tgt_mask[row, len(p): len(seq)] = True
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        # Right padding + causal attention: real tokens never see the pads, so no attention mask is needed (and
        # sdpa takes its is_causal fast path). lm_head only where a response token is predicted.
        hidden = getattr(model, model.base_model_prefix)(input_ids=ids).last_hidden_state
        m = tgt_mask[:, 1:]
        logits = model.get_output_embeddings()(hidden[:, :-1][m])
        loss = torch.nn.functional.cross_entropy(logits, ids[:, 1:][m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            log(f"  sft step {step + 1}/{steps}: loss {sum(losses[-log_every:]) / log_every:.4f}")
        if callback is not None:
            callback(step + 1, model)
    model.eval()
    return losses


def generate_responses(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int = 40,
                       do_sample: bool = False, temperature: float = 1.0, num_samples: int = 1,
                       batch_size: int = 512, seed: int = 0) -> list[list[str]]:
    """Generate ``num_samples`` responses per prompt (left-padded batches). Returns decoded texts."""
    import torch

    pad = tokenizer.pad_token_id
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    flat = [p for p in prompts for _ in range(num_samples)]
    out: list[str] = []
    torch.manual_seed(seed)
    with torch.no_grad():
        for s in range(0, len(flat), batch_size):
            chunk = flat[s: s + batch_size]
            L = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), L), pad, dtype=torch.long)
            attn = torch.zeros((len(chunk), L), dtype=torch.long)
            for row, p in enumerate(chunk):
                ids[row, L - len(p):] = torch.tensor(p)
                attn[row, L - len(p):] = 1
            kw = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if do_sample else dict(do_sample=False)
            gen = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                                 eos_token_id=eos, pad_token_id=pad, **kw)
            out += tokenizer.batch_decode(gen[:, L:], skip_special_tokens=True)
    return [out[i * num_samples: (i + 1) * num_samples] for i in range(len(prompts))]


def evaluate(model, tokenizer, problems: Sequence[Problem], num_samples: int = 8, temperature: float = 1.0,
             seed: int = 0) -> dict:
    """Greedy accuracy per phrasing, and the share of questions whose samples are mixed (>=1 right, >=1 wrong)."""
    res: dict = {}
    for phrasing in ("original", "rephrased"):
        prompts = [render_prompt_ids(tokenizer, messages_for(p.question(phrasing))) for p in problems]
        greedy = generate_responses(model, tokenizer, prompts)
        res[f"greedy_acc_{phrasing}"] = sum(is_correct(g[0], p.ground_truth) for g, p in zip(greedy, problems)) / len(problems)
        samples = generate_responses(model, tokenizer, prompts, do_sample=True, temperature=temperature,
                                     num_samples=num_samples, seed=seed)
        correct = [[is_correct(s, p.ground_truth) for s in ss] for ss, p in zip(samples, problems)]
        res[f"sample_acc_{phrasing}"] = sum(map(sum, correct)) / (len(problems) * num_samples)
        res[f"mixed_frac_{phrasing}"] = sum(any(c) and not all(c) for c in correct) / len(problems)
        res[f"boxed_rate_{phrasing}"] = sum(extract_last_boxed(s) is not None for ss in samples for s in ss) / (
            len(problems) * num_samples)
    return res


# --------------------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------------------
BUNDLE_ENTRIES = ("data", "model", "metrics.json")


def is_complete(out: str) -> bool:
    need = ["model/config.json", "model/tokenizer.json", "data/train.parquet", "data/train_rephrased.parquet",
            "data/val.parquet", "data/val_rephrased.parquet"]
    return all(os.path.exists(os.path.join(out, n)) for n in need) and any(
        f.endswith((".safetensors", ".bin")) for f in os.listdir(os.path.join(out, "model")))


def make_tiny_task(out: str = "assets/tiny", arch: str = "qwen3", seed: int = 0, sft_steps: int = DEFAULT_SFT_STEPS,
                   force: bool = False, num_train: int = 2000, num_val: int = 200, batch_size: int = 64,
                   lr: float = 3e-3, num_samples: int = 8, max_operand: int = MAX_OPERAND, threads: int | None = 2,
                   deterministic: bool = True, terse_prob: float = DEFAULT_TERSE_PROB, log=print) -> dict | None:
    """Build the whole bundle atomically (temp dir next to ``out`` + os.replace). Returns the metrics dict,
    or None when ``out`` is already complete and ``force`` is False.

    Bit-reproducible for a fixed (seed, arch, sft_steps, threads) on the same torch build."""
    import torch

    out = os.path.abspath(out)
    if os.path.isdir(out) and is_complete(out) and not force:
        log(f"{out} already holds the tiny task (use --force to rebuild); skipping")
        return None
    if os.path.exists(out):
        stray = sorted(set(os.listdir(out)) - set(BUNDLE_ENTRIES)) if os.path.isdir(out) else [out]
        if stray:  # never replace a directory that holds anything but a previous bundle
            raise FileExistsError(f"refusing to replace {out}: it holds files that are not part of the tiny-task "
                                  f"bundle ({stray[:5]})")
    t0 = time.time()
    prev_det, prev_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        metrics = _build_bundle(tmp, arch, seed, sft_steps, num_train, num_val, batch_size, lr, num_samples,
                                max_operand, terse_prob, log)
        metrics["total_seconds"] = round(time.time() - t0, 2)
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
        _umask_permissions(tmp)
        old = None
        if os.path.exists(out):  # os.replace cannot overwrite a non-empty directory: move the old one aside first
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.replace(out, os.path.join(old, "x"))
        os.replace(tmp, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    return metrics


def _umask_permissions(root: str) -> None:
    """mkdtemp makes 0700 directories (and safetensors writes 0600 files): give the bundle ordinary permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for d, dirs, files in os.walk(root):
        for n in dirs:
            os.chmod(os.path.join(d, n), 0o777 & ~umask)
        for n in files:
            os.chmod(os.path.join(d, n), 0o666 & ~umask)


def _build_bundle(tmp, arch, seed, sft_steps, num_train, num_val, batch_size, lr, num_samples, max_operand, terse_prob,
                  log):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(seed)
    train, val = generate_problems(num_train, num_val, seed, max_operand=max_operand)
    for split, probs in (("train", train), ("val", val)):
        write_parquet(verl_rows(probs, split, "original"), os.path.join(tmp, "data", f"{split}.parquet"))
        write_parquet(verl_rows(probs, split, "rephrased"), os.path.join(tmp, "data", f"{split}_rephrased.parquet"))
    tok = build_tokenizer()
    model = build_model(tok, arch, seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"data: {len(train)} train / {len(val)} val pairs (operands 1..{max_operand}); tokenizer vocab {len(tok)}; "
        f"{arch} model {n_params / 1e6:.3f}M params; {torch.get_num_threads()} threads")
    t = time.time()
    losses = sft_warm_start(model, tok, train, sft_steps, batch_size=batch_size, lr=lr, seed=seed,
                            log_every=max(1, sft_steps // 5), log=log, terse_prob=terse_prob)
    t_sft = time.time() - t
    t = time.time()
    metrics = evaluate(model, tok, val, num_samples=num_samples, seed=seed)
    t_eval = time.time() - t
    model.generation_config = GenerationConfig(bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids(IM_END),
                                               pad_token_id=tok.pad_token_id)
    mdir = os.path.join(tmp, "model")
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    # the saved bundle must load offline with the Auto classes and reproduce the in-memory model
    tok2 = AutoTokenizer.from_pretrained(mdir)
    model2 = AutoModelForCausalLM.from_pretrained(mdir).eval()
    probe = render_prompt_ids(tok2, messages_for(val[0].original))
    if probe != render_prompt_ids(tok, messages_for(val[0].original)):
        raise RuntimeError("reloaded tokenizer encodes differently")
    with torch.no_grad():
        x = torch.tensor([probe])
        if not torch.allclose(model(input_ids=x).logits, model2(input_ids=x).logits, atol=1e-5):
            raise RuntimeError("reloaded model differs from the trained one")
    metrics.update(
        arch=arch, seed=seed, sft_steps=sft_steps, terse_prob=terse_prob, batch_size=batch_size, lr=lr, max_operand=max_operand,
        final_sft_loss=round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4) if losses else None,
        num_params=n_params, vocab_size=len(tok), num_train=len(train), num_val=len(val), num_samples=num_samples,
        sft_seconds=round(t_sft, 2), eval_seconds=round(t_eval, 2), torch_version=torch.__version__,
        num_threads=torch.get_num_threads())
    return metrics
