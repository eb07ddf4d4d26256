"""Let megatron-core run on a CPU-only torch build (gloo backend).

megatron-core assumes CUDA in a handful of places (RNG tracker, ``device='cuda'`` literals,
``tensor.type()`` string checks, streams). On a machine without CUDA we redirect exactly those
to CPU equivalents; with CUDA present :func:`apply` does nothing. Entry points call it explicitly
before the first ``megatron`` import (``parallel.init_distributed`` and the converter CLIs do).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import types
import warnings

import torch

_APPLIED = False


def cuda_available() -> bool:
    return torch.cuda.is_available()


def _stub_paged_stash() -> None:
    """megatron-core >= 0.19 imports triton through the MoE paged-stash kernels; a fake top-level
    ``triton`` breaks torch inductor, so stub only the megatron module (dense models never use it)."""
    try:
        import triton  # noqa: F401

        return
    except ImportError:
        pass
    name = "megatron.core.transformer.moe.ops.paged_stash"
    mod = types.ModuleType(name)
    mod.GLOBAL_BLOCK_SIZE = 1024

    def _unavailable(*_a, **_k):
        raise RuntimeError("paged-stash kernels need triton and a GPU")

    mod.paged_stash_copy_kernel = _unavailable
    mod.paged_stash_pop_kernel = _unavailable
    sys.modules[name] = mod


def _to_cpu_device(device):
    if isinstance(device, bool):
        return device
    if isinstance(device, int):
        return "cpu"
    if isinstance(device, str) and device.startswith("cuda"):
        return "cpu"
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def _cpu_factory(factory):
    def wrapped(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        return factory(*args, **kwargs)

    wrapped.__name__ = getattr(factory, "__name__", "factory")
    wrapped.__wrapped__ = factory
    return wrapped


class _NullStream:
    def __init__(self, *_a, **_k):
        pass

    def wait_event(self, *_a, **_k):
        pass

    def wait_stream(self, *_a, **_k):
        pass

    def record_event(self, *_a, **_k):
        return _NullEvent()

    def synchronize(self):
        pass

    def query(self):
        return True


class _NullEvent(_NullStream):
    def record(self, *_a, **_k):
        pass

    def wait(self, *_a, **_k):
        pass

    def elapsed_time(self, _other):
        return 0.0


_FACTORIES = (
    "tensor",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "rand",
    "randn",
    "randint",
    "as_tensor",
    "eye",
    "linspace",
    "empty_strided",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
)


class _CpuTorch(types.ModuleType):
    """``torch`` as megatron modules see it: CUDA device arguments of factories become CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)


_CPU_TORCH = _CpuTorch("torch")
for _name in _FACTORIES:
    setattr(_CPU_TORCH, _name, _cpu_factory(getattr(torch, _name)))


def _rebind_torch(module) -> None:
    if getattr(module, "torch", None) is torch:
        module.torch = _CPU_TORCH


class _MegatronImportHook(importlib.abc.MetaPathFinder):
    """Rebinds ``torch`` in every megatron module imported from now on."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("megatron."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            _rebind_torch(module)

        spec.loader = _WrappedLoader(loader, exec_module)
        return spec


class _WrappedLoader(importlib.abc.Loader):
    def __init__(self, inner, exec_module):
        self._inner, self._exec = inner, exec_module

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._exec(module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _scope_factories_to_megatron() -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.") and module is not None:
            _rebind_torch(module)
    sys.meta_path.insert(0, _MegatronImportHook())


def apply() -> None:
    """Install the CPU redirections once per process; a no-op when CUDA is available."""
    global _APPLIED
    if _APPLIED or cuda_available():
        return
    _APPLIED = True
    if os.environ.get("RANK", "0") == "0":
        print(
            "[cpu_compat] no CUDA device: megatron-core runs on the CPU (gloo) with its CUDA calls redirected, "
            "torch norms and optimizers (Transformer Engine and Apex are GPU-only)",
            file=sys.stderr,
            flush=True,
        )
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    warnings.filterwarnings("ignore", message=".*GPTModel IS DEPRECATED.*")
    warnings.filterwarnings("ignore", message="Apex is not installed. Falling back to Torch Norm")
    _stub_paged_stash()

    # RNG tracker: megatron's CUDA RNG states become CPU generator states.
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    # default_generator, not torch.manual_seed: the latter recurses into cuda.manual_seed_all.
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    import megatron.core.tensor_parallel.random as mrandom

    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda new_state, *a, **k: torch.set_rng_state(new_state)
    logging.getLogger("megatron.core.tensor_parallel.random").setLevel(logging.ERROR)

    # Tensors placed on torch.cuda.current_device() or on a literal 'cuda' land on the CPU. The
    # factory wrappers are visible to megatron modules only: swapping torch.tensor globally for a
    # Python function changes transformers' numerics (its cache/attention paths treat it differently).
    torch.cuda.current_device = lambda: "cpu"
    _scope_factories_to_megatron()
    torch.Tensor.cuda = lambda self, *a, **k: self

    # Optimizer code asserts tensor.type() == 'torch.cuda.FloatTensor' and friends.
    plain_type = torch.Tensor.type

    def cuda_named_type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs:
            name = plain_type(self)
            if name.startswith("torch.") and not name.startswith("torch.cuda."):
                return "torch.cuda." + name[len("torch.") :]
            return name
        return plain_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = cuda_named_type

    # Synchronisation, streams and events are meaningless on CPU.
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda: None
    torch.cuda.current_stream = lambda *a, **k: _NullStream()
    torch.cuda.default_stream = lambda *a, **k: _NullStream()
    torch.cuda.Stream = _NullStream
    torch.cuda.Event = _NullEvent
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
