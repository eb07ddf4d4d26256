"""The tiny task's model: a small HF causal LM, its supervised warm start, sampling and evaluation.

The warm start leaves the model partly competent, with the format noise of a base model (terse, unboxed answers
to some question styles), so RL has something to improve and a label-free reward has something to fix.
Bit-reproducible for a fixed seed and thread count on the same torch build.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

from megatron_corew.data.prompts import chat_messages, prompt_ids
from megatron_corew.demo.tiny_task import IM_END, Problem, extract_last_boxed, is_correct, is_terse_question

ARCHS = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
MODEL_DIMS = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)
DEFAULT_SFT_STEPS = 500
DEFAULT_TERSE_PROB = 0.6


def build_model(tokenizer, arch: str = "qwen3", seed: int = 0, **dims):
    """A randomly initialised fp32 model of ``arch`` sized by MODEL_DIMS (override with ``dims``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    d = dict(MODEL_DIMS, **dims)
    cfg = AutoConfig.for_model(
        arch,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **d,
    )
    cfg.architectures = [ARCHS[arch]]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    return model.float()


def _sft_items(tokenizer, problems: Sequence[Problem]) -> list[tuple[list[int], list[int], list[int] | None]]:
    """(prompt ids, boxed response ids, terse response ids or None) per problem and phrasing."""
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    items = []
    for p in problems:
        resp = list(tokenizer(p.solution, add_special_tokens=False)["input_ids"]) + [eos]
        terse = list(tokenizer(p.terse_solution, add_special_tokens=False)["input_ids"]) + [eos]
        for phrasing in ("original", "rephrased"):
            q = p.question(phrasing)
            items.append((prompt_ids(tokenizer, chat_messages(q)), resp, terse if is_terse_question(q) else None))
    return items


def sft_warm_start(
    model,
    tokenizer,
    problems: Sequence[Problem],
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 0,
    log=print,
    callback=None,
    terse_prob: float = DEFAULT_TERSE_PROB,
) -> list[float]:
    """Supervised warm start on both phrasings, loss on response tokens only (incl. <|im_end|>).

    Questions opening with one of ``tiny_task.TERSE_OPENINGS`` get the terse (unboxed) target with probability
    ``terse_prob`` each time they are drawn. Returns the per-step losses.
    """
    if not 0.0 <= terse_prob <= 1.0:
        raise ValueError(f"terse_prob must be in [0, 1], got {terse_prob}")
    terse_rng = random.Random(seed + 1)

    def target(item):
        prompt, resp, terse = item
        return prompt, terse if terse is not None and terse_rng.random() < terse_prob else resp

    return supervised_finetune(
        model,
        tokenizer,
        _sft_items(tokenizer, problems),
        steps,
        target,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        log_every=log_every,
        log=log,
        callback=callback,
    )


def supervised_finetune(
    model,
    tokenizer,
    items: Sequence,
    steps: int,
    target=None,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 0,
    log=print,
    callback=None,
) -> list[float]:
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
        batch = [target(items[k]) for k in perm[cursor : cursor + batch_size]]
        cursor += batch_size
        L = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), L), pad, dtype=torch.long)
        tgt_mask = torch.zeros((len(batch), L), dtype=torch.bool)
        for row, (p, r) in enumerate(batch):
            seq = p + r
            ids[row, : len(seq)] = torch.tensor(seq)
            tgt_mask[row, len(p) : len(seq)] = True
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


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[list[int]],
    max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
    num_samples: int = 1,
    batch_size: int = 512,
    seed: int = 0,
) -> list[list[str]]:
    """Generate ``num_samples`` responses per prompt (left-padded batches). Returns decoded texts."""
    import torch

    pad = tokenizer.pad_token_id
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    flat = [p for p in prompts for _ in range(num_samples)]
    out: list[str] = []
    torch.manual_seed(seed)
    with torch.no_grad():
        for s in range(0, len(flat), batch_size):
            chunk = flat[s : s + batch_size]
            L = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), L), pad, dtype=torch.long)
            attn = torch.zeros((len(chunk), L), dtype=torch.long)
            for row, p in enumerate(chunk):
                ids[row, L - len(p) :] = torch.tensor(p)
                attn[row, L - len(p) :] = 1
            kw = (
                dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
                if do_sample
                else dict(do_sample=False)
            )
            gen = model.generate(
                input_ids=ids,
                attention_mask=attn,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
                **kw,
            )
            out += tokenizer.batch_decode(gen[:, L:], skip_special_tokens=True)
    return [out[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def evaluate(
    model, tokenizer, problems: Sequence[Problem], num_samples: int = 8, temperature: float = 1.0, seed: int = 0
) -> dict:
    """Greedy accuracy per phrasing, and the share of questions whose samples are mixed (>=1 right, >=1 wrong)."""
    res: dict = {}
    for phrasing in ("original", "rephrased"):
        prompts = [prompt_ids(tokenizer, chat_messages(p.question(phrasing))) for p in problems]
        greedy = generate_responses(model, tokenizer, prompts)
        n_right = sum(is_correct(g[0], p.ground_truth) for g, p in zip(greedy, problems))
        res[f"greedy_acc_{phrasing}"] = n_right / len(problems)
        samples = generate_responses(
            model, tokenizer, prompts, do_sample=True, temperature=temperature, num_samples=num_samples, seed=seed
        )
        correct = [[is_correct(s, p.ground_truth) for s in ss] for ss, p in zip(samples, problems)]
        res[f"sample_acc_{phrasing}"] = sum(map(sum, correct)) / (len(problems) * num_samples)
        res[f"mixed_frac_{phrasing}"] = sum(any(c) and not all(c) for c in correct) / len(problems)
        res[f"boxed_rate_{phrasing}"] = sum(extract_last_boxed(s) is not None for ss in samples for s in ss) / (
            len(problems) * num_samples
        )
    return res
