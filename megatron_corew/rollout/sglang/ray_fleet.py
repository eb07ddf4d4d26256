"""Ray-managed rollout fleet: engine actors in placement groups, a router, reward workers.

``RayRolloutManager`` is a ``fleet.Fleet``: ``SGLangEngine`` uses it exactly like the
plain ``LocalFleet`` (HTTP to each engine's URL, weight sync by the same three modes), while Ray
decides where each engine runs:

* one ``EngineActor`` per SGLang server, pinned to a placement-group bundle (``{"GPU": tp}`` on
  GPU nodes, a fraction of a CPU on CPU machines); the actor starts the server on its own node
  (so ``CUDA_VISIBLE_DEVICES`` from Ray reaches it) and reports its URL, pid and node;
* ``PACK`` (default) keeps the engines together, ``SPREAD`` puts them on different nodes; with
  ``address=None`` a local Ray is started, so one machine needs no Ray setup at all;
* ``resource`` (``--sglang-ray-resource NAME[=AMOUNT]``) adds a custom Ray resource to every engine bundle,
  so engines only land on nodes started with it (``ray start --resources '{"NAME": 1}'``; Ray's built-in
  ``node:IP`` names one node); a cluster offering none of it fails at start-up, not after the placement timeout;
* ``restart(i)`` restarts engine i's server through its actor (or a fresh actor if the actor
  itself died); ``SGLangEngine`` then re-pushes the weights it kept;
* a pool of ``RewardWorker`` actors grades already-extracted answers in parallel with
  ``megatron_corew.rewards.grading.workers.grade_answers`` (the inline grader's function and timeout rule);
* ``throughput_report(engine)``: per-engine tokens/s, requests, restarts, node and pid.

Each actor starts its server at the raylet's niceness (Ray nices its workers to 15), so the server competes for
the CPU like one launched by hand. Ray 2.60 turns on token auth by default: ``RAY_AUTH_MODE=disabled`` is set,
and Ray's session files go to a fresh directory under /tmp.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import time
from typing import Sequence

from megatron_corew.rollout.sglang.engine import SGLangEngine
from megatron_corew.rollout.sglang.fleet import Fleet
from megatron_corew.rollout.sglang.http import EngineDownError, HTTPConfig, log_event
from megatron_corew.rollout.sglang.server import RouterProcess, ServerProcess, ServerSpec

RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
DEFAULT_RESOURCE_AMOUNT = 0.001  # any number of engines per node offering the resource (Ray's unit is 1e-4)


def parse_resource(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME=AMOUNT`` (per engine) -> (name, amount); ValueError naming what is wrong."""
    name, sep, amount = text.partition("=")
    name = name.strip()
    if not name or any(c.isspace() for c in name) or "," in name:
        raise ValueError(f"'{text}' is not a Ray resource name (expected NAME or NAME=AMOUNT, e.g. rollout_node)")
    if name in RESERVED_RESOURCES:
        raise ValueError(
            f"'{name}' is a built-in Ray resource set by the engine's own CPU/GPU request; name a custom one"
        )
    if not sep:
        return name, DEFAULT_RESOURCE_AMOUNT
    try:
        value = float(amount)
    except ValueError:
        raise ValueError(f"'{text}': the amount '{amount}' is not a number") from None
    if not (0 < value < float("inf")):
        raise ValueError(f"'{text}': the amount must be > 0 and finite")
    return name, value


def check_cluster_offers(ray, name: str, amount: float, count: int) -> None:
    """The cluster has ``count * amount`` of ``name`` in total (else the placement group would wait until its
    timeout): raises ValueError listing the custom resources the cluster does offer."""
    total = ray.cluster_resources()
    if total.get(name, 0.0) + 1e-9 >= amount * count:
        return
    offered = sorted(k for k in total if k not in RESERVED_RESOURCES and not k.startswith("node:__internal"))
    have = f"the cluster offers {total[name]:g}" if name in total else "no node of the cluster offers it"
    raise ValueError(
        f"--sglang-ray-resource {name}: {count} engine(s) need {amount * count:g} of it but {have} "
        f"(custom/node resources: {', '.join(offered) or 'none'}); start the rollout nodes with "
        f"ray start --resources '{{\"{name}\": 1}}'"
    )


def init_ray(address: str | None = None, num_cpus: int | None = None, temp_dir: str | None = None):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return ray
    kw = dict(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            object_store_memory=256 << 20,
            _temp_dir=temp_dir or tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
            **kw,
        )
    return ray


class _EngineActor:
    """Owns one SGLang server process on the node Ray placed it on."""

    def __init__(self, spec_kwargs: dict):
        import ray

        # Ray starts its workers at niceness 15 (its worker_niceness default) and the server would inherit it: on a
        # busy node its scheduler then gets a few percent of a core. Start it at the raylet's (parent's) priority.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, os.getppid()))
        except OSError:
            pass  # an unprivileged user cannot lower the niceness; the server then runs at Ray's
        spec = ServerSpec(**spec_kwargs)
        if spec.host == "auto":
            spec.host = ray.util.get_node_ip_address()
        self.proc = ServerProcess(spec)

    def info(self) -> dict:
        import ray

        return {
            "url": self.proc.url,
            "pid": self.proc.pid,
            "instance_id": self.proc.instance_id,
            "node": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "starts": self.proc.starts,
        }

    def start(self, timeout: float) -> dict:
        self.proc.start()
        self.proc.wait_ready(timeout)
        return self.info()

    def restart(self, timeout: float) -> dict:
        self.proc.stop()
        return self.start(timeout)

    def alive(self, control_timeout: float) -> bool:
        return self.proc.healthy(HTTPConfig(control_timeout=control_timeout))

    def kill_server(self, sig: int = 9) -> int:
        """Fault injection for tests: kill the server's process group, keep the actor."""
        pid = self.proc.pid
        os.killpg(pid, sig)
        self.proc.proc.wait()
        return pid

    def log_tail(self, n: int = 30) -> str:
        return self.proc.log_tail(n)

    def stop(self) -> None:
        self.proc.stop()


class _RewardWorker:
    def grade_answers(
        self, answers: list[str], ground_truths: list[str | None], mode: str, timeout_s: float
    ) -> list[float]:
        from megatron_corew.rewards.grading.workers import grade_answers

        return grade_answers(answers, ground_truths, mode, timeout_s)

    def pid(self) -> int:
        return os.getpid()


class RayRolloutManager(Fleet):
    can_restart = True

    def __init__(
        self,
        specs: list[ServerSpec],
        http: HTTPConfig | None = None,
        startup_timeout: float = 600.0,
        use_router: bool = False,
        address: str | None = None,
        num_reward_workers: int = 0,
        cpus_per_engine: float | None = None,
        gpus_per_engine: float | None = None,
        cpus_per_reward_worker: float = 0.25,
        strategy: str = "PACK",
        log_dir: str | None = None,
        temp_dir: str | None = None,
        resource: str | None = None,
    ):
        self.specs = specs
        self.http = http or HTTPConfig()
        self.startup_timeout = startup_timeout
        self.use_router = use_router
        self.address, self.temp_dir = address, temp_dir
        self.num_reward_workers = num_reward_workers
        on_gpu = specs[0].device == "cuda" if specs else False
        self.gpus_per_engine = gpus_per_engine if gpus_per_engine is not None else (specs[0].tp_size if on_gpu else 0)
        self.cpus_per_engine = cpus_per_engine if cpus_per_engine is not None else (1.0 if on_gpu else 0.25)
        self.cpus_per_reward_worker = cpus_per_reward_worker
        self.strategy = strategy
        self.resource = parse_resource(resource) if resource else None
        self.log_dir = log_dir
        self.tp_sizes = [s.tp_size for s in specs]
        self.actors: list = []
        self.infos: list[dict] = []
        self.reward_workers: list = []
        self.grader = None  # a RayGrader over the reward workers, once they run
        self.router: RouterProcess | None = None
        self.pg = None
        self._ray = None

    # ------------------------------------------------------------------ lifecycle
    def _engine_actor(self, i: int):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ray = self._ray
        spec = self.specs[i]
        kwargs = {
            k: getattr(spec, k)
            for k in (
                "model_path",
                "python",
                "host",
                "port",
                "device",
                "tp_size",
                "server_args",
                "extra_pythonpath",
                "env",
                "log_path",
                "name",
            )
        }
        cls = ray.remote(_EngineActor)
        placement = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i)
        return cls.options(
            num_cpus=self.cpus_per_engine,
            num_gpus=self.gpus_per_engine,
            max_restarts=0,
            scheduling_strategy=placement,
            name=None,
        ).remote(kwargs)

    def start(self) -> "RayRolloutManager":
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        t0 = time.monotonic()
        self._ray = ray = init_ray(self.address, temp_dir=self.temp_dir)
        # registered after ray.init, so it runs before Ray's own exit handler disconnects (then a ray.get in
        # shutdown would silently start a second local Ray at exit)
        atexit.register(self.shutdown)
        bundle = {"CPU": self.cpus_per_engine}
        if self.gpus_per_engine:
            bundle["GPU"] = self.gpus_per_engine
        if self.resource:
            check_cluster_offers(ray, *self.resource, len(self.specs))
            bundle[self.resource[0]] = self.resource[1]
        bundles = [dict(bundle) for _ in self.specs] + [{"CPU": self.cpus_per_reward_worker}] * self.num_reward_workers
        self.pg = placement_group(bundles, strategy=self.strategy)
        try:
            ray.get(self.pg.ready(), timeout=self.startup_timeout)
        except Exception as e:  # noqa: BLE001
            raise EngineDownError(
                f"Ray could not place {len(self.specs)} engine bundle(s) {bundle} and "
                f"{self.num_reward_workers} reward worker(s) ({self.strategy}): {e}"
            ) from e
        try:
            self.actors = [self._engine_actor(i) for i in range(len(self.specs))]
            self.infos = ray.get(
                [a.start.remote(self.startup_timeout) for a in self.actors], timeout=self.startup_timeout + 60
            )
            for i, info in enumerate(self.infos):
                log_event(
                    f"ray engine {i}: {info['url']} pid {info['pid']} on node {info['node']} id {info['node_id']}"
                )
            worker_cls = ray.remote(_RewardWorker)
            base = len(self.specs)
            self.reward_workers = [
                worker_cls.options(
                    num_cpus=self.cpus_per_reward_worker,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        self.pg, placement_group_bundle_index=base + k
                    ),
                ).remote()
                for k in range(self.num_reward_workers)
            ]
            if self.reward_workers:
                from megatron_corew.rewards.grading.workers import RayGrader

                self.grader = RayGrader(self)
            if self.use_router:
                self.router = RouterProcess(
                    self.specs[0].python,
                    [x["url"] for x in self.infos],
                    log_path=os.path.join(self.log_dir, "router.log") if self.log_dir else None,
                    request_timeout=self.http.request_timeout,
                )
                self.router.start()
                self.router_url = self.router.url
        except BaseException:
            self.shutdown()
            raise
        log_event(
            f"ray rollout manager: {len(self.specs)} engine(s), {self.num_reward_workers} reward worker(s) "
            f"ready in {time.monotonic() - t0:.1f} s"
        )
        return self

    def shutdown(self) -> None:
        ray = self._ray
        if self.router:
            self.router.stop()
            self.router = None
        if ray is None or not ray.is_initialized():
            # Ray is gone already: it took this driver's actors with it, and each server follows its actor
            # (PR_SET_PDEATHSIG); any ray call here would auto-start a new local Ray
            self.actors, self.reward_workers, self.grader, self.pg = [], [], None, None
            return
        for a in self.actors:
            try:
                ray.get(a.stop.remote(), timeout=60)
            except Exception:  # noqa: BLE001
                pass
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        for w in self.reward_workers:
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001
                pass
        self.actors, self.reward_workers, self.grader = [], [], None
        if self.pg is not None:
            from ray.util.placement_group import remove_placement_group

            try:
                remove_placement_group(self.pg)
            except Exception:  # noqa: BLE001
                pass
            self.pg = None

    # ------------------------------------------------------------------ Fleet interface
    def __len__(self) -> int:
        return len(self.specs)

    def url(self, i: int) -> str:
        return self.infos[i]["url"]

    def instance_id(self, i: int) -> str:
        return self.infos[i]["instance_id"]

    def describe(self, i: int) -> str:
        x = self.infos[i]
        return f"ray engine {i} ({x['url']}, pid {x['pid']}, node {x['node']}, log {self.specs[i].log_path})"

    def alive(self, i: int) -> bool:
        try:
            return bool(
                self._ray.get(
                    self.actors[i].alive.remote(self.http.control_timeout), timeout=self.http.control_timeout + 30
                )
            )
        except Exception:  # noqa: BLE001  (actor dead or unreachable)
            return False

    def restart(self, i: int) -> float:
        ray = self._ray
        t0 = time.monotonic()
        try:
            info = ray.get(self.actors[i].restart.remote(self.startup_timeout), timeout=self.startup_timeout + 60)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, ray.exceptions.RayTaskError):
                raise EngineDownError(f"ray engine {i} could not restart its server: {e}") from e
            log_event(f"ray engine {i}: actor lost ({type(e).__name__}); starting a new actor in the same bundle")
            try:
                ray.kill(self.actors[i])
            except Exception:  # noqa: BLE001
                pass
            self.actors[i] = self._engine_actor(i)
            info = ray.get(self.actors[i].start.remote(self.startup_timeout), timeout=self.startup_timeout + 60)
        self.infos[i] = info
        dt = time.monotonic() - t0
        log_event(f"ray engine {i}: back up at {info['url']} (pid {info['pid']}, node {info['node']}) after {dt:.1f} s")
        return dt

    # ------------------------------------------------------------------ extras
    def kill_server(self, i: int, sig: int = 9) -> int:
        return self._ray.get(self.actors[i].kill_server.remote(sig), timeout=60)

    def grade_answers(
        self,
        answers: Sequence[str],
        ground_truths: Sequence[str | None],
        mode: str = "reference",
        timeout_s: float | None = None,
    ) -> list[float]:
        """Grade extracted answers in contiguous chunks, one per reward worker (in this process when there are
        none), under the grading module's per-item timeout rule (default ``DEFAULT_ITEM_TIMEOUT_S``)."""
        from megatron_corew.rewards.grading.workers import DEFAULT_ITEM_TIMEOUT_S, grade_answers

        answers, ground_truths = list(answers), list(ground_truths)
        if len(answers) != len(ground_truths):
            raise ValueError(f"{len(answers)} answers but {len(ground_truths)} ground truths")
        timeout_s = DEFAULT_ITEM_TIMEOUT_S if timeout_s is None else timeout_s
        if not self.reward_workers:
            return grade_answers(answers, ground_truths, mode, timeout_s)
        n = len(self.reward_workers)
        per = -(-len(answers) // n) if answers else 0
        chunks = [(answers[k * per : (k + 1) * per], ground_truths[k * per : (k + 1) * per]) for k in range(n)]
        futures = [w.grade_answers.remote(a, g, mode, timeout_s) for w, (a, g) in zip(self.reward_workers, chunks) if a]
        wait = max(60.0, per * timeout_s + 30.0)  # every item of a chunk is bounded by timeout_s
        return [score for part in self._ray.get(futures, timeout=wait) for score in part]

    def throughput_report(self, engine: SGLangEngine | None = None) -> list[dict]:
        rows = engine.engine_stats() if engine is not None else [{"engine": i} for i in range(len(self))]
        for row in rows:
            i = row.get("engine")
            if isinstance(i, int):
                row.update(node=self.infos[i]["node"], pid=self.infos[i]["pid"], starts=self.infos[i]["starts"])
        return rows
