"""train_rl.py with the embedded policy engine's ``generate`` answered through ``submit`` / ``collect``: the
synchronous run of the interruptible sampler (token j of row i drawn from (request_seed(step seed, i), j)), the
independent reference that ``--async-mode fully-async --max-staleness 0`` must equal bitwise
(tests/test_fully_async.py). Only the policy engine is changed; the teacher keeps ``generate``.

Usage: python tests/workers/per_request_sync.py TRAIN_RL_FLAGS...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _patch() -> None:
    from megatron_corew.rollout.base import Request
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.streaming import request_seed

    plain = EmbeddedEngine.generate

    def generate(self, prompts, params):
        if self.role != "policy":
            return plain(self, prompts, params)
        reqs = [Request(i, list(p), params, seed=request_seed(params.seed, i)) for i, p in enumerate(prompts)]
        self.submit(reqs)
        done = {}
        while len(done) < len(reqs):
            for r in self.collect(None):
                done[r.rid] = r
        return [done[i].generation() for i in range(len(reqs))]

    EmbeddedEngine.generate = generate


if __name__ == "__main__":
    _patch()
    import train_rl

    sys.exit(train_rl.main(sys.argv[1:]))
