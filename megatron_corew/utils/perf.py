"""Throughput and model-FLOPs utilisation of a step, from the model's shape and the step's real token counts.

``perf/tokens_per_s_per_gpu``: the tokens a step processed -- response tokens generated (policy and teacher
rollouts) plus the tokens trained on (prompt + response of every trained sequence: one forward and backward each)
-- over the step's wall time and the GPUs (ranks, on CPU) the run occupies: the trainer's ranks, plus the engines'
GPUs when they are not the trainer's (launched SGLang engines without ``--colocate``).

The token rates all count the same tokens, the response tokens an engine generated (prompt tokens are not
generation work; an engine's own ``throughput()`` counts them too):

* ``perf/tokens_per_s``: the policy's response tokens of the step over the step's wall time;
* ``perf/rollout_tokens_per_s`` / ``perf/teacher_rollout_tokens_per_s``: the policy's / the teacher's response
  tokens of the step over that step's generate / teacher-generate stage;
* ``perf/rollout_tokens_per_s_cumulative`` / ``perf/teacher_rollout_tokens_per_s_cumulative`` (and per SGLang
  engine ``..._engine{i}_...``): the same count over the same seconds, summed since the engine started.

``perf/train_mfu``: analytic FLOPs of the train stage over its measured time and the peak of the devices it ran on
(``--peak-flops``, else the table below by ``torch.cuda.get_device_name``; on CPU without ``--peak-flops`` the
metric is left out). The FLOPs are those of dense matrix products, counted per sequence with its real length
(padding is not useful work): per token and layer 2 x (q/k/v, output, MLP) weights; causal attention
2 x 2 x heads x head_dim x L(L+1)/2 per sequence and layer; the output layer 2 x hidden x vocab per token.
Backward = 2 x forward; full recompute adds one forward of the layers (selective: of the attention core); a KL
term adds the anchor's forward. Element-wise work (norms, softmax, rotary) is not counted.
"""

from __future__ import annotations

# dense peak FLOP/s per device, by a substring of torch.cuda.get_device_name() (first match wins): vendor data
# sheets, SXM parts, without sparsity; fp32 is the non-tensor-core rate (torch's default: no TF32 in matmuls)
PEAK_FLOPS = (
    ("H200", {"bf16": 989e12, "fp32": 67e12}),
    ("H100 PCIe", {"bf16": 756e12, "fp32": 51e12}),
    ("H100", {"bf16": 989e12, "fp32": 67e12}),
    ("A100", {"bf16": 312e12, "fp32": 19.5e12}),
)


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """The table's dense peak for this device and precision ("bf16" or "fp32"), or None when unknown."""
    for key, peaks in PEAK_FLOPS:
        if device_name and key in device_name:
            return peaks[precision]
    return None


def layer_token_flops(m) -> int:
    """Forward FLOPs of one layer's weight matrices for one token (``m``: checkpoints_conversion ModelArgs)."""
    q, kv = m.num_attention_heads * m.head_dim, m.num_query_groups * m.head_dim
    return 2 * (m.hidden_size * (q + 2 * kv) + q * m.hidden_size + 3 * m.hidden_size * m.ffn_hidden_size)


def attention_flops(m, length: int) -> int:
    """Forward FLOPs of one layer's causal attention core (QK^T and AV) for one sequence of ``length``."""
    return 2 * 2 * m.num_attention_heads * m.head_dim * (length * (length + 1) // 2)


def forward_flops(m, lengths) -> tuple[int, int, int]:
    """(layer weights, attention core, output layer) forward FLOPs of the whole model over sequences ``lengths``."""
    tokens = sum(lengths)
    layers = m.num_layers * layer_token_flops(m) * tokens
    attention = m.num_layers * sum(attention_flops(m, n) for n in lengths)
    logits = 2 * m.hidden_size * m.vocab_size * tokens
    return layers, attention, logits


def train_flops(m, lengths, recompute: str | None = None, anchor_forward: bool = False) -> int:
    """FLOPs of one GRPO train stage: forward + backward (2 x forward) of every sequence, the recomputed forward
    (full: the layers; selective: the attention core) and, with a KL term, the anchor's forward."""
    layers, attention, logits = forward_flops(m, lengths)
    total = 3 * (layers + attention + logits)
    if recompute == "full":
        total += layers + attention
    elif recompute == "selective":
        total += attention
    if anchor_forward:
        total += layers + attention + logits
    return total


def step_perf(
    *,
    model_args,
    train_lengths,
    generated_tokens: int,
    step_seconds: float,
    train_seconds: float | None,
    gpus: int,
    ranks: int,
    peak: float | None,
    recompute: str | None = None,
    anchor_forward: bool = False,
) -> dict:
    """The step's ``perf/tokens_per_s_per_gpu``, ``perf/train_tflops_per_gpu`` and ``perf/train_mfu``."""
    out = {"perf/tokens_per_s_per_gpu": (generated_tokens + sum(train_lengths)) / max(step_seconds, 1e-9) / gpus}
    if train_seconds:
        per_rank = train_flops(model_args, train_lengths, recompute, anchor_forward) / train_seconds / ranks
        out["perf/train_tflops_per_gpu"] = per_rank / 1e12
        if peak:
            out["perf/train_mfu"] = per_rank / peak
    return out


class PerfMeter:
    """The loop's side: built once from the flags, ``metrics(batch, seconds)`` every step."""

    def __init__(self, args, model_args, world: int, rollout_cfg, use_kl: bool):
        import torch

        self.model_args, self.world, self.use_kl = model_args, world, use_kl
        self.recompute = getattr(args, "recompute_granularity", None)
        engine_gpus = 0
        if rollout_cfg.backend == "sglang" and not getattr(args, "colocate", False) and not rollout_cfg.urls:
            engine_gpus = rollout_cfg.num_engines * rollout_cfg.tp_size if torch.cuda.is_available() else 0
        self.gpus = world + engine_gpus
        self.peak = getattr(args, "peak_flops", None)
        if self.peak is None and torch.cuda.is_available():
            self.peak = peak_flops(torch.cuda.get_device_name(), "bf16" if getattr(args, "bf16", False) else "fp32")

    def metrics(self, batch, seconds: dict) -> dict:
        generated = sum(len(r.response_ids) for r in batch.rollouts + list(batch.teacher_rollouts or []))
        return step_perf(
            model_args=self.model_args,
            train_lengths=[r.length for r in batch.rollouts],
            generated_tokens=generated,
            step_seconds=seconds["perf/time_step"],
            train_seconds=seconds.get("perf/time_train"),
            gpus=self.gpus,
            ranks=self.world,
            peak=self.peak,
            recompute=self.recompute,
            anchor_forward=self.use_kl,
        )


def rate_metrics(batch, seconds: dict, step_seconds: float, engine=None, teacher_engine=None) -> dict:
    """This step's token rates (whole step, generate, teacher generate) and each engine's own rate since start:
    response tokens per second throughout (the module docstring)."""
    generated = sum(len(r.response_ids) for r in batch.rollouts)
    out = {"perf/tokens_per_s": generated / step_seconds}
    if seconds.get("perf/time_generate"):  # this step's rate; the engine's own is since start
        out["perf/rollout_tokens_per_s"] = generated / seconds["perf/time_generate"]
    if batch.teacher_rollouts and seconds.get("perf/time_teacher_generate"):
        teacher = sum(len(r.response_ids) for r in batch.teacher_rollouts)
        out["perf/teacher_rollout_tokens_per_s"] = teacher / seconds["perf/time_teacher_generate"]
    for role, eng in (("rollout", engine), ("teacher_rollout", teacher_engine)):
        if eng is not None:
            out[f"perf/{role}_tokens_per_s_cumulative"] = eng.throughput()
            for name, tps in (eng.engine_throughputs() if hasattr(eng, "engine_throughputs") else {}).items():
                out[f"perf/{role}_engine{name}_tokens_per_s_cumulative"] = tps  # since start, like eng.throughput()
    return out
