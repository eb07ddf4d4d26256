"""The RL training loop: rollouts -> rewards -> GRPO step on megatron -> weight sync -> log/eval/save.

Launch like Megatron's pretrain scripts: ``torchrun --nproc_per_node N train_rl.py --flags`` (or
plain ``python train_rl.py`` for one process). Global rank 0 owns the rollout engine(s) and the
reward computation; every rank runs the megatron step.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from megatron_corew.utils import faults

from megatron_corew.policy import parallel
from megatron_corew.arguments import parse_args


def _log0(*msg):
    if parallel.is_rank0():
        print(*msg, flush=True)


class RLRun:
    def __init__(self, args):
        from transformers import AutoTokenizer

        from megatron_corew.data import dataset as data
        from megatron_corew.policy.model_builder import load_model_args, validate_layout
        from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig

        self.args = a = args
        self.model_args = load_model_args(a.hf_checkpoint)  # fail fast on a bad directory/config
        validate_layout(self.model_args, a.tensor_model_parallel_size, a.pipeline_model_parallel_size)
        parallel.init_distributed(a.tensor_model_parallel_size, a.pipeline_model_parallel_size, a.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(a.hf_checkpoint)
        self.paired = a.train_data_rephrased is not None and (a.reward_method == "corewarding_1" or a.teacher_on_rephrased)
        if self.paired:
            self.train_set = data.load_paired_examples(a.train_data, a.train_data_rephrased, self.tokenizer,
                                                       a.max_prompt_length)
        else:
            self.train_set = data.load_examples(a.train_data, self.tokenizer, a.max_prompt_length, prompt_key=a.prompt_key)
        if len(self.train_set) < a.global_batch_size:
            raise SystemExit(f"error: {a.train_data} has {len(self.train_set)} usable prompts, fewer than "
                             f"--global-batch-size {a.global_batch_size}")
        self.val_set = data.load_examples(a.val_data, self.tokenizer, a.max_prompt_length) if a.val_data else None
        self._check_labels()
        self.sampler = data.EpochSampler(len(self.train_set), a.global_batch_size, seed=a.seed)
        steps_per_epoch = len(self.train_set) // a.global_batch_size
        self.train_iters = a.train_iters if a.train_iters is not None else steps_per_epoch * a.epochs
        is_ii = a.reward_method == "corewarding_2"
        self.trainer = PolicyTrainer(self.model_args, TrainerConfig(
            tp=a.tensor_model_parallel_size, pp=a.pipeline_model_parallel_size,
            micro_batch_size=a.micro_batch_size, max_tokens_per_micro_batch=a.max_tokens_per_micro_batch,
            lr=a.lr, min_lr=a.min_lr, lr_warmup_fraction=a.lr_warmup_fraction, train_iters=self.train_iters,
            weight_decay=a.weight_decay, adam_beta1=a.adam_beta1, adam_beta2=a.adam_beta2, adam_eps=a.adam_eps,
            clip_grad=a.clip_grad, clip_low=a.clip_ratio_low, clip_high=a.clip_ratio_high,
            dual_clip=a.dual_clip_c, kl_coef=a.kl_loss_coef, kl_estimator=a.kl_loss_type,
            entropy_coef=a.entropy_coef, temperature=a.rollout_temperature, bf16=a.bf16,
            use_distributed_optimizer=a.use_distributed_optimizer, recompute=a.recompute_granularity,
            sequence_parallel=a.sequence_parallel, fp8=a.fp8_format, fp8_recipe=a.fp8_recipe,
            overlap_grad_reduce=a.overlap_grad_reduce, overlap_param_gather=a.overlap_param_gather,
            attention_backend=a.attention_backend,
            need_anchor=a.kl_loss_coef > 0 or is_ii, anchor_cpu_offload=a.anchor_cpu_offload))
        self.engine = self.teacher_engine = None
        if parallel.is_rank0():
            from megatron_corew.rollout.factory import create_engine

            self.engine = create_engine(a, a.hf_checkpoint, self.tokenizer, "policy")
            if is_ii:
                self.teacher_engine = create_engine(a, a.hf_checkpoint, self.tokenizer, "teacher")
        from megatron_corew.utils.run_logger import RunLogger

        self.logger = RunLogger(a.output_dir, a.tensorboard_dir, enabled=parallel.is_rank0(),
                                wandb_project=a.wandb_project, run_name=os.path.basename(a.output_dir.rstrip("/")),
                                config={k: v for k, v in vars(a).items() if isinstance(v, (int, float, str, bool))})
        self.start_step = 0
        self.weight_version = 0
        self.skipped_updates = 0
        if a.load:
            from megatron_corew.policy.checkpointing import load_checkpoint

            state = load_checkpoint(a.load, self.trainer)
            if state is not None:
                self.start_step = state["step"]
                self.sampler.load_state_dict(state["sampler"])
                self.weight_version = state.get("weight_version", self.start_step)
                self.skipped_updates = state.get("skipped_updates", 0)
                self.sync_weights()
                if is_ii:
                    self.sync_teacher()
                _log0(f"resumed from {a.load} at step {self.start_step}")

    # ------------------------------------------------------------------ helpers
    def _push(self, model, engine) -> None:
        """Export ``model`` as HF tensors into ``engine`` (the export is collective: ranks without an engine, or
        runs without one, still walk it)."""
        from megatron_corew.policy.weights import export_hf_weights

        tensors = export_hf_weights(model, self.model_args)
        if engine is not None:
            engine.update_weights(tensors, self.weight_version)
        else:
            for _ in tensors:
                pass

    def sync_weights(self) -> float:
        t0 = time.perf_counter()
        self._push(self.trainer.model, self.engine)
        return time.perf_counter() - t0

    def sync_teacher(self) -> None:
        with self.trainer.anchor_resident():
            self._push(self.trainer.anchor, self.teacher_engine)

    def _check_labels(self):
        """Ground truth is needed by ``gt`` training and by validation, nowhere else: fail before training starts."""
        from megatron_corew.data.dataset import DataError

        train = self.train_set.original if self.paired else self.train_set
        checks = [(self.val_set, "validation (--val-data)")] + (
            [(train, "--reward-method gt")] if self.args.reward_method == "gt" else [])
        for ds, who in checks:
            rows = ds.unlabelled_rows() if ds is not None else []
            if rows:
                raise DataError(f"{ds.path}: {len(rows)} row(s) have no reward_model.ground_truth (first: row "
                                f"{rows[0]}), which {who} needs; drop them or use a self-supervised method")

    def _remote_grader(self):
        """The Ray rollout manager's reward workers, when it has any: (answer, ground truth) pairs graded in
        parallel processes off the training process (math grading is CPU-bound)."""
        fleet = getattr(self.engine, "fleet", None)
        if fleet is None or not getattr(fleet, "reward_workers", None):
            return None

        def grade(pairs, mode):
            self._remote_graded += len(pairs)
            return fleet.grade([f"\\boxed{{{answer}}}" for answer, _ in pairs], [gt for _, gt in pairs], mode)

        return grade

    def _params(self, greedy=False, seed=None):
        from megatron_corew.rollout.base import SamplingParams

        a = self.args
        return SamplingParams(temperature=a.rollout_temperature, top_p=a.rollout_top_p,
                              max_new_tokens=a.max_response_length, greedy=greedy, seed=seed)

    def _answers(self, gens):
        from megatron_corew.rewards.grading.core import extract_boxed_answer

        texts = [self.tokenizer.decode(g.response_ids, skip_special_tokens=True) for g in gens]
        return texts, [extract_boxed_answer(t) for t in texts]

    def validate(self) -> dict:
        """Held-out accuracy, graded against ground truth (rank 0): greedy pass@1 (the reference's validation) and,
        with ``--val-n-samples k``, sampled avg@k, pass@k and maj@k (the accuracy of the majority-voted answer, the
        ceiling of what a vote label can teach). Same code as ``tools/evaluate.py``."""
        if self.val_set is None or not parallel.is_rank0():
            return {}
        from megatron_corew.evaluation import validation_metrics

        a = self.args
        n = len(self.val_set) if a.max_val_samples is None else min(len(self.val_set), a.max_val_samples)
        return validation_metrics(self.engine, self.tokenizer, [self.val_set[i] for i in range(n)],
                                  grading=a.gt_grading, max_new_tokens=a.max_response_length,
                                  n_samples=a.val_n_samples, temperature=a.val_temperature)

    # ------------------------------------------------------------------ one step
    def batch_prompts(self, indices):
        """[(example, view, pair_id)] for this step; Co-rewarding-I takes both views of each pair."""
        if not self.paired:
            return [(self.train_set[i], 0, k) for k, i in enumerate(indices)]
        pairs = [self.train_set[i] for i in indices]
        if self.args.reward_method == "corewarding_1":
            return [(p[0], 0, k) for k, p in enumerate(pairs)] + [(p[1], 1, k) for k, p in enumerate(pairs)]
        return [(p[0], 0, k) for k, p in enumerate(pairs)]

    def step(self, step: int) -> dict:
        from megatron_corew.algo import grpo
        from megatron_corew.rewards.methods import Group, compute_rewards
        from megatron_corew.algo.ema import ema_alpha
        from megatron_corew.policy.trainer import TrainSample

        a, G = self.args, self.args.n_samples_per_prompt
        timers: dict[str, float] = {}
        indices = self.sampler.next_batch()  # identical on every rank (same seed, same cursor)
        batch = self.batch_prompts(indices)
        t0 = time.perf_counter()
        gens = None
        if self.engine is not None:
            prompts = [ex.prompt_ids for ex, _, _ in batch for _ in range(G)]
            gens = self.engine.generate(prompts, self._params(seed=a.seed * 100003 + step))
        gens = parallel.broadcast_object(gens)
        timers["perf/time_generate"] = time.perf_counter() - t0

        teacher_gens = None
        if a.reward_method == "corewarding_2":
            t1 = time.perf_counter()
            if not a.no_ema and (step + 1) % a.teacher_update_interval == 0:
                alpha = ema_alpha(step + 1, self.train_iters, a.teacher_alpha_start, a.teacher_alpha_end)
                self.trainer.ema_update_anchor(alpha)  # from the pre-update policy
                timers["train/teacher_alpha"] = alpha
                self.sync_teacher()
            if self.teacher_engine is not None:
                if a.teacher_on_rephrased:
                    teacher_prompts = [self.train_set[i][1].prompt_ids for i in indices for _ in range(G)]
                else:
                    teacher_prompts = [ex.prompt_ids for ex, _, _ in batch for _ in range(G)]
                teacher_gens = self.teacher_engine.generate(teacher_prompts, self._params(seed=a.seed * 7919 + step))
            timers["perf/time_teacher_generate"] = time.perf_counter() - t1

        samples = [TrainSample(g.prompt_ids, g.response_ids, view=batch[k // G][1], rollout_logprobs=g.logprobs)
                   for k, g in enumerate(gens)]
        seq_stats = None
        if a.reward_method in ("self_certainty", "entropy"):
            t1 = time.perf_counter()
            stats = self.trainer.sequence_stats(samples, "policy", want=("logp", "entropy", "self_certainty"))
            seq_stats = [stats[i] for i in range(len(samples))]
            timers["perf/time_logprob"] = time.perf_counter() - t1

        t1 = time.perf_counter()
        metrics: dict = {}
        advantages = None
        if parallel.is_rank0():
            texts, answers = self._answers(gens)
            teacher_answers = self._answers(teacher_gens)[1] if teacher_gens is not None else None
            groups = []
            for k, (ex, view, pair_id) in enumerate(batch):
                sl = slice(k * G, (k + 1) * G)
                groups.append(Group(answers=answers[sl], ground_truth=ex.ground_truth, view=view, pair_id=pair_id,
                                    teacher_answers=teacher_answers[sl] if teacher_answers else None,
                                    seq_stats=seq_stats[sl] if seq_stats else []))
            self._remote_graded = 0
            rewards, metrics = compute_rewards(a.reward_method, groups, label_matching=a.label_matching,
                                               gt_grading=a.gt_grading, grader=self._remote_grader())
            if self._remote_graded:
                metrics["reward/graded_by_workers"] = self._remote_graded
            flat = [r for rs in rewards for r in rs]
            group_ids = [k for k in range(len(groups)) for _ in range(G)]
            advantages = grpo.group_advantages(flat, group_ids, norm_by_std=not a.no_std_normalization).tolist()
            lengths = [len(g.response_ids) for g in gens]
            metrics.update({
                "reward/mean": sum(flat) / len(flat),
                "rollout/response_length_mean": sum(lengths) / len(lengths),
                "rollout/response_length_max": max(lengths),
                "rollout/clip_ratio": sum(g.finish_reason == "length" for g in gens) / len(gens),
                "rollout/boxed_rate": sum(bool(x) for x in answers) / len(answers),
            })
            labelled = [k for k in range(len(texts)) if groups[k // G].ground_truth is not None]
            if a.reward_method != "gt" and labelled:  # how often would ground truth have agreed (never trained on)
                from megatron_corew.rewards.grading.core import grade

                metrics["reward/gt_accuracy"] = sum(
                    grade(texts[k], groups[k // G].ground_truth, a.gt_grading) for k in labelled) / len(labelled)
            elif a.reward_method == "gt":
                metrics["reward/gt_accuracy"] = metrics["reward/mean"]
            if teacher_gens is not None:
                metrics["rollout/teacher_response_length_mean"] = sum(len(g.response_ids) for g in teacher_gens) / len(teacher_gens)
            if a.rollout_dump:
                self._dump(step, batch, gens, texts, flat, G, groups)
        advantages = parallel.broadcast_object(advantages)
        timers["perf/time_reward"] = time.perf_counter() - t1
        for s, adv in zip(samples, advantages):
            s.advantage = adv
        view_scale = 0.5 if (a.reward_method == "corewarding_1" and a.view_loss_agg == "mean") else 1.0

        t1 = time.perf_counter()
        train_metrics = self.trainer.train_step(samples, loss_scale=view_scale)
        timers["perf/time_train"] = time.perf_counter() - t1
        if not train_metrics["update_ok"]:
            self.skipped_updates += 1
            message = (f"step {step + 1}: non-finite loss or gradient (loss {train_metrics['loss']}, grad norm "
                       f"{train_metrics['grad_norm']}); the update was not applied")
            if a.on_nonfinite == "stop":
                raise FloatingPointError(message + "; stopping (--on-nonfinite stop), last checkpoint is intact")
            _log0("warning: " + message + " (skipped; --on-nonfinite skip)")
        train_metrics["skipped_updates"] = self.skipped_updates
        self.weight_version += 1
        timers["perf/time_weight_sync"] = self.sync_weights()
        total_tokens = sum(s.length for s in samples)
        timers["perf/time_step"] = time.perf_counter() - t0
        if self.trainer.anchor is not None:  # 0 with --anchor-cpu-offload: the copy lives in host memory
            timers["mem/anchor_device_bytes"] = self.trainer.anchor_device_bytes
        timers["perf/tokens_per_s"] = total_tokens / timers["perf/time_step"]
        if self.engine is not None:
            timers["perf/rollout_tokens_per_s"] = self.engine.throughput()
            if self.teacher_engine is not None:
                timers["perf/teacher_rollout_tokens_per_s"] = self.teacher_engine.throughput()
            for role, eng in (("rollout", self.engine), ("teacher_rollout", self.teacher_engine)):
                for name, tps in (eng.engine_throughputs() if hasattr(eng, "engine_throughputs") else {}).items():
                    timers[f"perf/{role}_engine{name}_tokens_per_s"] = tps
        metrics.update({f"train/{k}": v for k, v in train_metrics.items() if k != "update_ok"})
        metrics.update(timers)
        return metrics

    def _dump(self, step, batch, gens, texts, rewards, G, groups):
        path = os.path.join(self.args.output_dir, "rollouts", f"step_{step:06d}.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            for k, (g, t, r) in enumerate(zip(gens, texts, rewards)):
                ex, view, pair_id = batch[k // G]
                f.write(json.dumps({"step": step, "index": ex.index, "view": view, "pair_id": pair_id,
                                    "label": groups[k // G].label, "ground_truth": ex.ground_truth,
                                    "response": t, "reward": r, "finish_reason": g.finish_reason,
                                    "weight_version": g.weight_version}) + "\n")
        os.replace(path + ".tmp", path)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        a = self.args
        from tqdm import tqdm

        first_val = self.validate() if self.start_step == 0 else {}
        if first_val:
            _log0(f"validation accuracy before training: {first_val['val/accuracy']:.4f}")
            self.logger.log(0, first_val)
        bar = tqdm(total=self.train_iters, initial=self.start_step, disable=not parallel.is_rank0() or a.no_progress_bar,
                   desc=f"{a.reward_method}", dynamic_ncols=True)
        last_val = first_val
        from megatron_corew.algo.collapse import CollapseMonitor

        monitor = CollapseMonitor()
        if first_val:
            monitor.update(0, first_val)
        for step in range(self.start_step, self.train_iters):
            metrics = self.step(step)
            done = step + 1
            if a.eval_interval and done % a.eval_interval == 0 and done != self.train_iters:
                val = self.validate()
                metrics.update(val)
                last_val = val or last_val
            self.logger.log(done, metrics)
            for signal in monitor.update(done, metrics):
                _log0(f"warning: collapse signature at step {done}: {signal}")
            bar.update(1)
            bar.set_postfix(reward=f"{metrics.get('reward/mean', 0):.3f}", loss=f"{metrics['train/loss']:.4f}")
            if a.save and a.save_interval and done % a.save_interval == 0 and done != self.train_iters:
                self.save(done)
            if a.save_hf_interval and done % a.save_hf_interval == 0 and done != self.train_iters:
                self.save_hf(done)
            faults.maybe_kill("after_step", done)
        bar.close()
        final_val = self.validate()
        if final_val:
            self.logger.log(self.train_iters, final_val)
            _log0(f"validation accuracy after training:  {final_val['val/accuracy']:.4f}")
        if a.save:
            self.save(self.train_iters)
        if a.save_hf_interval:
            self.save_hf(self.train_iters)
        self.logger.close()
        return {"before": first_val.get("val/accuracy"), "after": final_val.get("val/accuracy"),
                "steps": self.train_iters, "policy_sha256": self.weights_digest(self.trainer.model),
                "anchor_sha256": self._anchor_digest()}

    def _anchor_digest(self) -> str | None:
        if self.trainer.anchor is None:
            return None
        with self.trainer.anchor_resident():
            return self.weights_digest(self.trainer.anchor)

    def weights_digest(self, model) -> str | None:
        """sha256 over the exported HF tensors (names and bytes): equal digests = bitwise-equal weights."""
        import hashlib

        from megatron_corew.policy.weights import export_hf_weights

        h = hashlib.sha256()
        for name, t in export_hf_weights(model, self.model_args):
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # bf16 too
        return h.hexdigest() if parallel.is_rank0() else None

    def save_hf(self, step: int) -> None:
        """HF safetensors export (collective on every rank; rank 0 writes atomically)."""
        from megatron_corew.policy.hf_export import save_hf_checkpoint

        a = self.args
        out = a.save_hf or os.path.join(a.output_dir, "hf")
        dtype = getattr(torch, a.save_hf_dtype) if a.save_hf_dtype else None
        path = save_hf_checkpoint(self.trainer.model, self.model_args, out, step, dtype=dtype)
        _log0(f"exported HF checkpoint {path}")

    def save(self, step: int) -> None:
        from megatron_corew.policy.checkpointing import save_checkpoint

        save_checkpoint(self.args.save, step, self.trainer,
                        {"sampler": self.sampler.state_dict(), "weight_version": self.weight_version,
                         "skipped_updates": self.skipped_updates}, keep_last=self.args.keep_last_checkpoints)


def main(argv=None) -> int:
    args = parse_args(argv)
    from megatron_corew.data.dataset import DataError
    from megatron_corew.policy.model_builder import ModelConfigError

    from checkpoints_conversion.hf_io import CheckpointError

    try:
        run = RLRun(args)
    except (ModelConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        result = run.run()
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 3
    if parallel.is_rank0():
        with open(os.path.join(args.output_dir, "result.json"), "w") as f:
            json.dump(result, f)
    parallel.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
