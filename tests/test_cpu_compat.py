"""cpu_compat.apply() is explicit and changes nothing where CUDA exists."""

import subprocess
import sys

PROBE = r"""
import sys, torch
torch.cuda.is_available = lambda: True          # as on a GPU machine
before = (torch.cuda.get_rng_state, torch.cuda.manual_seed, torch.cuda.current_device, torch.Tensor.type,
          torch.Tensor.cuda, torch.cuda.synchronize, torch.cuda.Stream, list(sys.meta_path))
from megatron_corew.policy import cpu_compat
cpu_compat.apply()
after = (torch.cuda.get_rng_state, torch.cuda.manual_seed, torch.cuda.current_device, torch.Tensor.type,
         torch.Tensor.cuda, torch.cuda.synchronize, torch.cuda.Stream, list(sys.meta_path))
assert before == after, "apply() patched something although CUDA is reported available"
assert not cpu_compat._APPLIED
print("UNCHANGED")
"""

APPLY = r"""
import sys, torch
from megatron_corew.policy import parallel   # importing patches nothing: apply() is explicit
assert torch.Tensor.type.__name__ == "type", "importing megatron_corew patched torch"
from megatron_corew.policy import cpu_compat
cpu_compat.apply(); cpu_compat.apply()
assert torch.Tensor.type.__name__ != "type"
print("PATCHED")
"""


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_apply_is_a_no_op_when_cuda_is_available():
    proc = _run(PROBE)
    assert proc.returncode == 0 and "UNCHANGED" in proc.stdout, proc.stderr
    assert "[cpu_compat]" not in proc.stderr


def test_apply_patches_once_and_says_so_in_one_line():
    proc = _run(APPLY)
    assert proc.returncode == 0 and "PATCHED" in proc.stdout, proc.stderr
    assert proc.stderr.count("[cpu_compat]") == 1
