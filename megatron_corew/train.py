"""The RL loop, one step as named stages: generate -> teacher -> statistics -> score -> train -> sync.
Generation in every mode (synchronous, pipelined, prefetched teacher, dynamic-sampling rounds) is
``rollout/generation.py``'s ``RolloutGenerator``.

Launch like Megatron's pretrain scripts: ``torchrun --nproc_per_node N train_rl.py --flags`` (or plain
``python train_rl.py`` for one process). Global rank 0 owns the rollout engine(s) and the scoring; every rank
runs the Megatron step. What a reward method needs is read from its ``MethodSpec``, never from its name.
"""

from __future__ import annotations

import os

from megatron_corew import algo, data, evaluation, offpolicy_options, rewards
from megatron_corew.algo import shaping
from megatron_corew.colocation import Colocation
from megatron_corew.data import online_rephrase
from megatron_corew.policy import checkpointing, hf_export, multistep, parallel, weight_push
from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig
from megatron_corew.records import Prompt, StepBatch
from megatron_corew.rewards.extract import get_extractor
from megatron_corew.rollout import factory
from megatron_corew.rollout.generation import PromptSource, RolloutGenerator, sampling_seed
from megatron_corew.utils import RunLogger, StageTimer, faults, lifecycle, perf, rollout_dump
from megatron_corew.utils.nonfinite import NonFiniteGuard
from megatron_corew.validation import hf_export_root


def log0(*msg) -> None:
    if parallel.is_rank0():
        print(*msg, flush=True)


def progress_postfix(metrics: dict) -> str:
    """The progress bar's numbers: reward, pseudo-label accuracy (methods that vote), rollout tokens/s, loss."""
    parts = [f"reward {metrics.get('reward/mean', 0):.3f}"]
    if "pseudo/label_acc" in metrics:
        parts.append(f"pseudo-acc {metrics['pseudo/label_acc']:.2f}")
    if "perf/tokens_per_s" in metrics:
        parts.append(f"{metrics['perf/tokens_per_s']:.0f} tok/s")
    parts.append(f"loss {metrics['train/loss']:.4f}")
    return ", ".join(parts)


class RLRun:
    def __init__(self, args):
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars of every engine and export say nothing useful here
        self.args = a = args
        self.method = rewards.get_method(a.reward_method)
        self.model_args = PolicyTrainer.check_model(
            a.hf_checkpoint, a.tensor_model_parallel_size, a.pipeline_model_parallel_size
        )  # fail fast, before any work
        parallel.init_distributed(a.tensor_model_parallel_size, a.pipeline_model_parallel_size, a.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(a.hf_checkpoint)
        self.extract_answer = get_extractor(a.answer_format)  # rewards, votes and validation read answers alike
        self._load_data()
        self.sampler = data.EpochSampler(len(self.train_set), a.global_batch_size, seed=a.seed)
        steps_per_epoch = len(self.train_set) // a.global_batch_size
        self.train_iters = a.train_iters if a.train_iters is not None else steps_per_epoch * a.epochs
        need_anchor = a.kl_loss_coef > 0 or self.method.needs_anchor_model
        self.trainer = PolicyTrainer(self.model_args, TrainerConfig.from_args(a, self.train_iters, need_anchor))
        self.rollout_cfg = factory.RolloutConfig.from_args(a)
        factory.leave_a_core_for_servers(self.rollout_cfg, log0)
        self.colocation = Colocation(  # --colocate / --offload-train: offloaded before the engines start
            self.trainer, offload_train=a.offload_train, colocate=a.colocate, rollout_cfg=self.rollout_cfg, log=log0
        )
        self.colocation.enter("rollout")
        self.perf = perf.PerfMeter(a, self.model_args, parallel.world_size(), self.rollout_cfg, a.kl_loss_coef > 0)
        engine = teacher_engine = None
        if parallel.is_rank0():
            engine = factory.create_engine(self.rollout_cfg, a.hf_checkpoint, self.tokenizer, "policy")
            if self.method.teacher:
                teacher_engine = factory.create_engine(
                    self.rollout_cfg, a.hf_checkpoint, self.tokenizer, "teacher", policy_engine=engine
                )
        prompts = PromptSource(self.new_batch, self.peek_batch, self.teacher_prompt_ids)
        self.generator = RolloutGenerator(  # docs/ASYNC.md
            a, self.trainer, prompts, self.train_iters, self.method.teacher, engine, teacher_engine
        )
        self.colocation.attach(engine, teacher_engine)
        self.grader = rewards.remote_grader(engine)
        self.start_step = 0
        self.nonfinite = NonFiniteGuard(args.on_nonfinite, getattr(args, "max_consecutive_skips", 0), log0)
        self.sync_stats: dict = {}
        self.reframe_counts: dict = {}  # Self-Harmony: the quality gate's verdicts on this step's rewrites
        self.stop = lifecycle.StopOnSignal()
        self.last_checkpoint = None
        if a.load:
            self._resume(a.load)
        self.logger = RunLogger(
            a.output_dir,
            a.tensorboard_dir,
            enabled=parallel.is_rank0(),
            wandb_project=a.wandb_project,
            run_name=os.path.basename(a.output_dir.rstrip("/")),
            config={k: v for k, v in vars(a).items() if isinstance(v, (int, float, str, bool))},
            resume_step=self.start_step if a.load else None,
        )
        log0(self.describe())

    @property
    def engine(self):
        return self.generator.engine

    @property
    def teacher_engine(self):
        return self.generator.teacher_engine

    def describe(self) -> str:
        """The one start-up line: what runs, where the rollouts come from, and how the ranks are laid out."""
        a, cfg = self.args, self.rollout_cfg
        tp, pp = a.tensor_model_parallel_size, a.pipeline_model_parallel_size
        world = parallel.world_size()
        where = "cuda" if parallel.device().type == "cuda" else "cpu"
        if cfg.backend == "embedded":
            rollout, teacher = f"embedded HF engine in rank 0 ({where})", ", teacher: a second embedded engine"
        elif cfg.urls:
            rollout, teacher = (
                f"SGLang, {len(cfg.urls)} attached server(s)",
                f", teacher engines: {cfg.teacher_engines}",
            )
        else:
            rollout = f"SGLang, {cfg.num_engines} launched server(s), weight sync {cfg.weight_sync or 'tensor'}"
            teacher = f", teacher engines: {cfg.teacher_engines}"
        teacher = teacher if self.method.teacher else ""
        precision = "bf16" if getattr(a, "bf16", False) else "fp32"
        return (
            f"[corew] {a.reward_method} ({self.method.summary or 'plugin method'}) | rollout: {rollout}{teacher} | "
            f"layout: {world} rank(s) = TP {tp} x PP {pp} x DP {world // (tp * pp)} on {where}, {precision} | "
            f"{a.global_batch_size} prompts x {a.n_samples_per_prompt} samples, steps {self.start_step}..{self.train_iters}"
        )

    # ------------------------------------------------------------------ set-up
    def _load_data(self) -> None:
        a = self.args
        self.paired = a.train_data_rephrased is not None and (self.method.paired_views or a.teacher_on_rephrased)
        if self.paired:
            self.train_set = data.load_paired_examples(
                a.train_data,
                a.train_data_rephrased,
                self.tokenizer,
                a.max_prompt_length,
                prompt_key=a.prompt_key,
                rephrase_check=a.train_data_rephrase_check,
            )
            log0(self.train_set.summary())
        else:
            self.train_set = data.load_examples(
                a.train_data, self.tokenizer, a.max_prompt_length, prompt_key=a.prompt_key
            )
        if len(self.train_set) < a.global_batch_size:
            raise SystemExit(
                f"error: {a.train_data} has {len(self.train_set)} usable prompts, fewer than "
                f"--global-batch-size {a.global_batch_size}"
            )
        self.val_sets = {
            name: data.load_examples(path, self.tokenizer, a.max_prompt_length, prompt_key=a.prompt_key)
            for name, path in offpolicy_options.val_sets(a.val_data)
        }
        notes = [] if self.paired else [self.train_set.drop_note("--train-data")]  # pairs: in their summary
        for note in notes + [v.drop_note("--val-data") for v in self.val_sets.values()]:
            if note:
                log0(note)
        train = self.train_set.original if self.paired else self.train_set
        checks = [(v, "validation (--val-data)") for v in self.val_sets.values()] + (
            [(train, f"--reward-method {a.reward_method}")] if self.method.needs_ground_truth else []
        )
        for ds, who in checks:  # ground truth is needed here and nowhere else: fail before training starts
            rows = ds.unlabelled_rows() if ds is not None else []
            if rows:
                raise data.DataError(
                    f"{ds.path}: {len(rows)} row(s) have no (or a blank) reward_model.ground_truth (first: row "
                    f"{rows[0]}), which {who} needs; drop them or use a self-supervised method"
                )

    def run_settings(self) -> dict:
        return checkpointing.run_settings(
            self.args, self.method, self.model_args, self.train_iters, len(self.train_set)
        )

    def _resume(self, load_dir: str) -> None:
        def check(state):  # before any tensor is loaded: a changed experiment is one line, not a traceback
            where = f"checkpoint {load_dir} (step {state['step']})"
            for warning in checkpointing.compare_settings(state.get("run"), self.run_settings(), where):
                log0("warning: " + warning)

        self.colocation.enter("sync")  # the trainer loads and pushes
        state = checkpointing.load_checkpoint(load_dir, self.trainer, check=check)
        if state is None:
            return
        self.start_step = state["step"]
        self.last_checkpoint = checkpointing.latest_checkpoint(load_dir)
        self.sampler.load_state_dict(state["sampler"])
        self.generator.load_state_dict(state, self.start_step)  # weight version, untrained rollouts
        self.nonfinite.skipped = state.get("skipped_updates", 0)
        self.sync_weights()
        if self.method.teacher:
            self.sync_teacher()
        log0(f"resumed from {load_dir} at step {self.start_step}")

    # ------------------------------------------------------------------ one step
    def step(self, step: int) -> dict:
        timer, metrics = self.colocation.timer(), {}
        self.sync_stats = {"policy": None, "anchor": None} if self.method.teacher else {"policy": None}
        self.reframe_counts = {}
        batch = self.new_batch(step)
        metrics.update(self.rollout_round(batch, timer))
        if self.args.dynamic_sampling:  # DAPO: zero-variance groups out, refilled from more prompts
            batch = self.generator.dynamic_rounds(batch, lambda b: self.rollout_round(b, timer), metrics)
        with timer.stage("train"):
            train_metrics = self.train(batch)
        with timer.stage("weight_sync"):
            self.sync_weights()
        self.colocation.end_step(timer)
        return {**metrics, **self.reframe_counts, **self.step_metrics(batch, train_metrics, timer)}

    def rollout_round(self, batch: StepBatch, timer: StageTimer) -> dict:
        """generate -> teacher -> statistics -> score for ``batch`` (dynamic sampling runs more rounds)."""
        metrics = {}
        with timer.stage("generate"):
            metrics.update(self.generate(batch))
        if self.method.teacher:
            with timer.stage("teacher_generate"):
                metrics.update(self.teacher(batch))
        if self.method.sequence_stats:
            with timer.stage("logprob"):
                self.sequence_statistics(batch)
        with timer.stage("reward"):
            metrics.update(self.score(batch))
        return metrics

    def new_batch(self, step: int, indices: list[int] | None = None, round: int = 0) -> StepBatch:
        """This step's prompts (identical on every rank: same seed, same cursor); Co-rewarding-I asks both views.
        ``indices``: a batch peeked ahead (the pipeline's), the sampler is not moved."""
        indices = self.sampler.next_batch() if indices is None else indices
        if self.method.reframes:  # Self-Harmony: the policy writes each question's second view now
            originals = [self.train_set[i] for i in indices]
            rephrased, counts = online_rephrase.reframe(self, originals, step, round)
            for k, v in counts.items():
                self.reframe_counts[k] = self.reframe_counts.get(k, 0.0) + v
            prompts = [Prompt(ex, v, k) for v, exs in enumerate((originals, rephrased)) for k, ex in enumerate(exs)]
        elif not self.paired:
            prompts = [Prompt(self.train_set[i], 0, k) for k, i in enumerate(indices)]
        else:
            pairs = [self.train_set[i] for i in indices]
            views = (0, 1) if self.method.paired_views else (0,)
            prompts = [Prompt(p[view], view, k) for view in views for k, p in enumerate(pairs)]
        return StepBatch(step, prompts, self.args.n_samples_per_prompt, indices=list(indices), round=round)

    def peek_batch(self, step: int, ahead: int) -> StepBatch:
        """The batch the sampler hands out ``ahead`` batches after the next one; its cursor does not move."""
        return self.new_batch(step, indices=self.sampler.peek(ahead))

    def generate(self, batch: StepBatch) -> dict:
        return self.generator.rollouts(batch)  # --async-rollout: started up to --max-staleness steps ahead

    def teacher_prompt_ids(self, batch: StepBatch) -> list[list[int]]:
        if not self.args.teacher_on_rephrased:
            return batch.prompt_ids()
        return batch.prompt_ids([Prompt(self.train_set[i][1], 1, k) for k, i in enumerate(batch.indices)])

    def teacher(self, batch: StepBatch) -> dict:
        """Co-rewarding-II: move the EMA teacher one step towards the pre-update policy, then let it answer the
        same questions (or their rephrasings); its answers only label, they are never trained on."""
        a, out = self.args, {}
        self.generator.start_teacher(batch)  # --teacher-prefetch: answers of the teacher before this EMA update
        if batch.round == 0 and not a.no_ema and (batch.step + 1) % a.teacher_update_interval == 0:
            alpha = algo.ema_alpha(batch.step + 1, self.train_iters, a.teacher_alpha_start, a.teacher_alpha_end)
            self.colocation.enter("train")  # the EMA reads the policy's fp32 main params
            self.trainer.ema_update_anchor(alpha)
            out["train/teacher_alpha"] = alpha
            self.colocation.enter("sync")
            self.sync_teacher()
            self.colocation.enter("rollout")
        out.update(self.generator.teacher_rollouts(batch, "train/teacher_alpha" in out))
        if self.teacher_engine is not None:
            rewards.decode(batch.teacher_rollouts, self.tokenizer, self.extract_answer)
        return out

    def sequence_statistics(self, batch: StepBatch) -> None:
        """Per-response policy statistics a method rewards (entropy, self-certainty): one forward pass."""
        stats = self.trainer.sequence_stats(batch.rollouts, "policy", want=("logp",) + self.method.sequence_stats)
        for i, r in enumerate(batch.rollouts):
            r.seq_stats = stats[i]

    def score(self, batch: StepBatch) -> dict:
        """Rewards (rank 0), then GRPO group advantages, shared with every rank."""
        metrics, advantages = {}, None
        if parallel.is_rank0():
            rewards.decode(batch.rollouts, self.tokenizer, self.extract_answer)
            a = self.args
            flags = tuple((dest, getattr(a, dest)) for dest in self.method.reads_flags)
            options = rewards.ScoreOptions(a.label_matching, a.gt_grading, self.grader, (a.seed,), flags)
            metrics = rewards.score_batch(batch, self.method, options)
            if self.args.overlong_buffer_len:  # DAPO soft overlong penalty, before the advantages
                a = self.args
                metrics.update(
                    shaping.apply_overlong_penalty(
                        batch.rollouts, a.max_response_length, a.overlong_buffer_len, a.overlong_penalty_factor
                    )
                )
            graded = self.grader.take_count() if self.grader is not None else 0
            if graded:
                metrics["reward/graded_by_workers"] = graded
            group_ids = [r.group for r in batch.rollouts]
            by_group: dict = {}
            for r in batch.rollouts:
                by_group.setdefault(r.group, set()).add(r.reward)
            metrics["reward/zero_variance_groups"] = sum(len(v) == 1 for v in by_group.values()) / len(by_group)
            advantages = algo.group_advantages(
                [r.reward for r in batch.rollouts], group_ids, norm_by_std=not self.args.no_std_normalization
            ).tolist()
            if self.args.rollout_dump:
                self._dump(batch)
        for r, adv in zip(batch.rollouts, parallel.broadcast_object(advantages)):
            r.advantage = adv
        if self.args.mask_truncated_responses:  # every rank: the loss mask is the trainer's input
            metrics.update(shaping.mask_truncated(batch.rollouts))
        return metrics

    def train(self, batch: StepBatch) -> dict:
        """One optimizer step; a non-finite loss or gradient skips the update (counted) or stops the run."""
        a = self.args
        view_scale = algo.view_loss_scale(self.method.paired_views, a.view_loss_agg)
        keys = [r.prompt.pair_id for r in batch.rollouts]  # mini-batches of whole prompts (pairs)
        m = multistep.train_rollout(self.trainer, batch.rollouts, a.num_steps_per_rollout, view_scale, keys)
        ok = m.pop("update_ok")
        self.nonfinite.check(ok, m, batch.step, self.last_checkpoint)
        m["skipped_updates"] = self.nonfinite.skipped
        if ok or m.get("applied_steps", 0):  # a version names weights: a refused update leaves them as they were
            self.generator.advance()
        return {f"train/{k}": v for k, v in m.items()}

    def step_metrics(self, batch: StepBatch, train_metrics: dict, timer: StageTimer) -> dict:
        out = dict(train_metrics)
        out.update(timer.seconds)
        out["perf/time_step"] = timer.total()
        out.update(self.perf.metrics(batch, out))
        out.update(getattr(timer, "memory", {}))
        out.update(self.colocation.step_metrics())
        out.update(weight_push.metrics(self.sync_stats))  # seconds and bytes of this step's pushes (all stages)
        if self.trainer.anchor is not None:  # 0 with --anchor-cpu-offload: the copy lives in host memory
            out["mem/anchor_device_bytes"] = self.trainer.anchor_device_bytes
        out.update(perf.rate_metrics(batch, timer.seconds, out["perf/time_step"], self.engine, self.teacher_engine))
        return out

    def _dump(self, batch: StepBatch) -> None:
        rollout_dump.write(self.args.output_dir, batch, token_counts=bool(self.args.overlong_buffer_len))

    # ------------------------------------------------------------------ sync, validate, save
    def sync_weights(self) -> None:
        self.sync_stats["policy"] = self.generator.push_policy()  # in-flight generations finish first

    def sync_teacher(self) -> None:
        self.sync_stats["anchor"] = self.generator.push_teacher()

    def validate(self) -> dict:
        """Held-out accuracy graded against ground truth (rank 0): greedy pass@1 (the reference's validation) and,
        with ``--val-n-samples k``, sampled avg@k, pass@k and maj@k. Same code as ``tools/evaluate.py``."""
        if not self.val_sets:
            return {}
        self.colocation.enter("rollout")  # every rank: the trainer leaves the engines' GPUs
        if not parallel.is_rank0():
            return {}
        a, out = self.args, {}
        prefixes = offpolicy_options.validation_prefixes(list(self.val_sets))
        for prefix, ds in zip(prefixes, self.val_sets.values()):
            n = len(ds) if a.max_val_samples is None else min(len(ds), a.max_val_samples)
            out.update(
                evaluation.validation_metrics(
                    self.engine,
                    self.tokenizer,
                    [ds[i] for i in range(n)],
                    grading=a.gt_grading,
                    max_new_tokens=a.max_response_length,
                    n_samples=a.val_n_samples,
                    temperature=a.val_temperature,
                    prefix=prefix,
                    seed=sampling_seed(a.seed, "validation"),  # never a policy or teacher seed
                    answer_format=a.answer_format,
                )
            )
        return {**out, **offpolicy_options.mean_over_sets(out, list(self.val_sets))}

    def run(self) -> dict:
        from tqdm import tqdm

        a = self.args
        first_val = self.validate() if self.start_step == 0 else {}
        monitor = algo.CollapseMonitor()
        if first_val:
            log0(f"validation accuracy before training: {first_val['val/accuracy']:.4f}")
            self.logger.log(0, first_val)
            monitor.update(0, first_val)
        bar = tqdm(
            total=self.train_iters,
            initial=self.start_step,
            desc=a.reward_method,
            dynamic_ncols=True,
            bar_format="{desc} {n_fmt}/{total_fmt} |{bar:16}| {elapsed}, ETA {remaining}{postfix}",
            disable=not parallel.is_rank0() or a.no_progress_bar,
        )
        self.restore_lost_export()
        self.stop.install()
        self.stop.step = self.start_step
        for step in range(self.start_step, self.train_iters):
            metrics = self.step(step)
            done = step + 1
            last = done == self.train_iters
            if a.eval_interval and done % a.eval_interval == 0 and not last:
                metrics.update(self.validate())
            self.logger.log(done, metrics)
            for signal in monitor.update(done, metrics):
                log0(f"warning: collapse signature at step {done}: {signal}")
            bar.set_postfix_str(progress_postfix(metrics), refresh=False)
            bar.update(1)
            if a.save and a.save_interval and done % a.save_interval == 0 and not last:
                self.save(done)
            if a.save_hf_interval and done % a.save_hf_interval == 0 and not last:
                self.save_hf(done)
            faults.maybe_kill("after_step", done)
            self.stop.check(done, parallel.broadcast_object(self.stop.signum is not None))  # every rank agrees
        self.stop.uninstall()
        bar.close()
        self.generator.close()
        final_val = self.validate()
        if final_val:
            self.logger.log(self.train_iters, final_val)
            log0(f"validation accuracy after training:  {final_val['val/accuracy']:.4f}")
        if a.save:
            self.save(self.train_iters)
        if a.save_hf_interval:
            self.save_hf(self.train_iters)
        self.logger.close()
        with self.colocation.hold("train"):
            digests = self.trainer.weights_digest("policy"), self.trainer.weights_digest("anchor")
        return {
            "before": first_val.get("val/accuracy"),
            "after": final_val.get("val/accuracy"),
            "steps": self.train_iters,
            "policy_sha256": digests[0],
            "anchor_sha256": digests[1],
        }

    def save_hf(self, step: int) -> None:
        import torch

        a = self.args
        with self.stop.critical(), self.colocation.hold("train"):
            path = hf_export.save_hf_checkpoint(
                self.trainer.model,
                self.model_args,
                hf_export_root(a),
                step,
                dtype=getattr(torch, a.save_hf_dtype) if a.save_hf_dtype else None,
                keep_last=a.keep_last_checkpoints,
            )
        log0(f"exported HF checkpoint {path}")

    def restore_lost_export(self) -> None:
        """A run killed during the HF export of the step it resumes at would never redo it: export it now."""
        a, step = self.args, self.start_step
        if not (a.load and a.save_hf_interval and step) or not (
            step % a.save_hf_interval == 0 or step == self.train_iters
        ):
            return
        if not parallel.broadcast_object(hf_export.exported(hf_export_root(a), step) if parallel.is_rank0() else None):
            log0(f"the HF export of step {step} is missing (killed while exporting?): exporting it again")
            self.save_hf(step)

    def save(self, step: int) -> None:
        with self.stop.critical(), self.colocation.hold("train"):  # completes even when SIGTERM hits the group
            self._save(step)

    def _save(self, step: int) -> None:
        self.last_checkpoint = self.trainer.save(
            self.args.save,
            step,
            {
                "sampler": self.sampler.state_dict(),
                **self.generator.state_dict(),  # weight version, untrained rollouts
                "skipped_updates": self.nonfinite.skipped,
                "run": self.run_settings(),
            },
            keep_last=self.args.keep_last_checkpoints,
        )
