"""Worker processes for the conversion tests (one process per job, as the tools run in production).

Jobs:
  convert --spec FILE   run the two conversions the tools run (checkpoints_conversion.api) for every entry:
                        HF -> Megatron (target TP/PP per entry) and, if ``back`` is set, Megatron -> HF.
  logits  --spec FILE --out FILE [--tp N --pp M]   (under torchrun for N*M > 1)
                        for every entry build a GPTModel at this layout with *zeroed* weights, load the
                        converted checkpoint (strict: every checkpoint key used, every model key found),
                        run a forward pass over the entry's tokens and save the full-vocab fp32 logits;
                        with ``export`` set, also write the model with hf_export.save_hf_checkpoint.
  greedy  --spec FILE --out FILE   greedy continuations with the megatron model (full recompute per token).
  train_save --spec FILE [--tp --pp]  one GRPO step, an RL checkpoint (checkpointing.save_checkpoint) and
                        the trained weights by HF name, to check converting a training checkpoint.
"""

import argparse
import json

from megatron_corew.policy import cpu_compat, parallel


def _convert(spec):
    from checkpoints_conversion import api

    for e in spec:
        api.hf_to_megatron(
            e["hf"], e["ckpt"], e.get("tp", 1), e.get("pp", 1), e.get("dtype", "auto"), overwrite=True, progress=False
        )
        if e.get("back"):
            api.megatron_to_hf(
                e["ckpt"],
                e.get("hf_config_dir"),
                e["back"],
                overwrite=True,
                progress=False,
                max_shard_bytes=e.get("max_shard_bytes", 10**9),
            )


def _build(args, tp, pp):
    import torch
    from megatron.core import parallel_state as ps

    from megatron_corew.policy.model_builder import build_gpt_model, build_transformer_config

    extra = {"variable_seq_lengths": True, "moe_token_dispatcher_type": "alltoall"} if pp > 1 else {}
    cfg = build_transformer_config(args, tp, pp, **extra)
    model = build_gpt_model(args, cfg, tp, ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # the checkpoint must provide every value the logits depend on
    return model.eval()


def _logits(model, tokens, vocab_size):
    """Full-vocab logits [b, s, vocab] on the last-stage TP-rank-0 process, None elsewhere."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    tokens = torch.as_tensor(tokens, dtype=torch.long)
    b, s = tokens.shape
    positions = torch.arange(s).unsqueeze(0).expand(b, -1)
    box = {}

    def loss_fn(logits):
        box["logits"] = logits.detach().clone()
        return logits.new_zeros(()), torch.tensor(1, dtype=torch.int), {}

    def step(data_iterator, chunk):
        next(data_iterator)
        return chunk(tokens, positions, None), loss_fn

    with torch.no_grad():
        get_forward_backward_func()(
            forward_step_func=step,
            data_iterator=iter([0]),
            model=[model],
            num_microbatches=1,
            seq_length=s,
            micro_batch_size=b,
            forward_only=True,
        )
    if not ps.is_pipeline_last_stage():
        return None
    local = box["logits"].float()
    if ps.get_tensor_model_parallel_world_size() > 1:
        parts = [torch.empty_like(local) for _ in range(ps.get_tensor_model_parallel_world_size())]
        dist.all_gather(parts, local.contiguous(), group=ps.get_tensor_model_parallel_group())
        local = torch.cat(parts, dim=-1)
    if ps.get_tensor_model_parallel_rank() != 0:
        return None
    return local[..., :vocab_size]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("job", choices=["convert", "logits", "greedy", "train_save"])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    a = ap.parse_args()
    cpu_compat.apply()  # before megatron's first import; a no-op where CUDA exists
    with open(a.spec) as f:
        spec = json.load(f)
    if a.job == "convert":
        _convert(spec)
        return
    if a.job == "train_save":
        _train_save(spec, a.tp, a.pp)
        return

    import torch

    from checkpoints_conversion.config import load_model_args
    from checkpoints_conversion.megatron_read import load_megatron_checkpoint

    parallel.init_distributed(a.tp, a.pp)
    owner = _owner_rank()
    results = {}
    for e in spec:
        args = load_model_args(e["hf"])
        model = _build(args, a.tp, a.pp)
        load_megatron_checkpoint(model, e["ckpt"], strict="raise_all")
        if e.get("export"):  # the trainer's periodic HF export, from this layout
            from megatron_corew.policy.hf_export import save_hf_checkpoint

            save_hf_checkpoint(model, args, e["export"], step=3)
        if a.job == "logits":
            logits = _logits(model, e["tokens"], args.vocab_size)
            if logits is not None:
                results[e["name"]] = logits
        else:  # greedy: the same prompt set, continued token by token (no KV cache)
            gens = []
            for prompt in e["prompts"]:
                seq = list(prompt)
                for _ in range(e["max_new_tokens"]):
                    logits = _logits(model, [seq], args.vocab_size)
                    nxt = int(logits[0, -1].argmax()) if logits is not None else 0
                    nxt = parallel.broadcast_object(nxt, src=owner)
                    seq.append(nxt)
                    if nxt in args.eos_token_id:
                        break
                gens.append(seq[len(prompt) :])
            results[e["name"]] = gens
    if parallel.rank() == owner:
        torch.save(results, a.out)
    parallel.destroy_distributed()


def _train_save(spec, tp, pp):
    """One GRPO step on the policy, then the RL checkpoint (model + optimizer + anchor) and, for
    comparison, the trained weights by HF name (rank 0)."""
    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy.checkpointing import save_checkpoint
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig, TrainSample
    from megatron_corew.policy.weights import hf_state_dict

    parallel.init_distributed(tp, pp)
    args = load_model_args(spec["hf"])
    trainer = PolicyTrainer(
        args,
        TrainerConfig(tp=tp, pp=pp, lr=1e-2, train_iters=5, lr_warmup_fraction=0.0, kl_coef=0.01, need_anchor=True),
    )
    trainer.train_step(
        [TrainSample([1, 2, 3], [4, 5, 6], advantage=1.0), TrainSample([7, 8], [9, 10, 11], advantage=-1.0)]
    )
    save_checkpoint(spec["save"], 1, trainer, {"sampler": None})
    sd = hf_state_dict(trainer.model, args)
    if sd is not None:
        torch.save(sd, spec["weights"])
    parallel.destroy_distributed()


def _owner_rank() -> int:
    """Global rank of the first process on the last pipeline stage with TP rank 0 (it assembles the logits)."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return 0
    mine = ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
    flags = [None] * dist.get_world_size()
    dist.all_gather_object(flags, mine)
    return flags.index(True)


if __name__ == "__main__":
    main()
