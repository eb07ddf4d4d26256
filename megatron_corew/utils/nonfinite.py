"""What a non-finite loss or gradient does to the run (``--on-nonfinite``, ``--max-consecutive-skips``): the
trainer has already refused the update; here it is counted, warned about, or the run stops with one line that
names the last good checkpoint (fp32 has no grad scaler to absorb it, and megatron would step with NaN)."""

from __future__ import annotations


class NonFiniteGuard:
    def __init__(self, on_nonfinite: str, max_consecutive: int = 0, log=print):
        self.on_nonfinite, self.max_consecutive, self.log = on_nonfinite, max_consecutive, log
        self.skipped = 0  # skipped updates over the run (checkpointed)
        self.consecutive = 0

    def check(self, update_ok: bool, m: dict, step: int, last_checkpoint: str | None) -> None:
        """Count a skipped update, or raise ``FloatingPointError`` when the run must stop."""
        if update_ok:
            self.consecutive = 0
            return
        self.skipped += 1
        self.consecutive += 1
        message = (
            f"step {step + 1}: non-finite loss or gradient (loss {m['loss']}, grad norm {m['grad_norm']}); "
            "the update was not applied"
        )
        if self.on_nonfinite == "stop":
            raise FloatingPointError(message + "; stopping (--on-nonfinite stop), last checkpoint is intact")
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            raise FloatingPointError(
                f"{self.consecutive} consecutive updates were non-finite and skipped (--max-consecutive-skips "
                f"{self.max_consecutive}); stopping at step {step + 1}, last good checkpoint: {last_checkpoint or 'none'}"
            )
        self.log("warning: " + message + " (skipped; --on-nonfinite skip)")
