"""Import-time stubs that let SGLang start on a CPU-only torch (test tooling, never imported by the library).

SGLang 0.5.23 imports ``sgl_kernel`` (PyPI's ``sglang-kernel`` is a CUDA build that fails with
``libcuda.so.1: cannot open shared object file``) and ``torchvision`` (PyPI's wheel replaces torch
with a CUDA build) at start-up, but for dense Llama/Qwen2/Qwen3 on a CPU without AMX it never
calls them. Each stub package resolves any attribute or submodule to a placeholder that raises
``NotImplementedError`` only when actually called, so a code path that really needs a kernel
fails loudly instead of silently computing something else.

    python tests/sglang_stubs.py DIR      # writes DIR/sgl_kernel/ and DIR/torchvision/
    ... --sglang-extra-pythonpath DIR     # the engine launcher prepends DIR to the server's PYTHONPATH

``write_fake_sglang(DIR)`` writes a FAKE ``sglang.launch_server`` (same HTTP API, served by the
embedded HF engine) so the client's multi-engine, restart and role-swap logic is tested in seconds
without SGLang.

``triton`` must NOT be stubbed this way (torch._inductor imports triton.backends.* whenever
``import triton`` succeeds): tools/install_sglang.sh installs the real wheel.
"""

from __future__ import annotations

import os
import sys

STUBBED = ("sgl_kernel", "torchvision")

_BODY = '''"""CPU import stub for {name} written by tests/sglang_stubs.py (not a real {name})."""
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+cpu-stub"
CPU_STUB = True


class _Missing:
    def __init__(self, path):
        self._path = path

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{{self._path}} is a CPU import stub; this code path needs the real {name}")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(self._path + "." + attr)


def _module_getattr(prefix):
    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(prefix + "." + attr)
    return __getattr__


__getattr__ = _module_getattr("{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any ``{name}.x.y`` submodule import succeeds with a module of placeholders."""

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("{name}."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__getattr__ = _module_getattr(spec.name)
        module.__path__ = []
        module.CPU_STUB = True
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubFinder())
'''


def write_stubs(root: str) -> str:
    """Write the stub packages under ``root`` (idempotent); return ``root`` for PYTHONPATH."""
    for name in STUBBED:
        pkg = os.path.join(root, name)
        os.makedirs(pkg, exist_ok=True)
        path = os.path.join(pkg, "__init__.py")
        body = _BODY.format(name=name)
        if not os.path.exists(path) or open(path).read() != body:
            with open(path + ".tmp", "w") as f:
                f.write(body)
            os.replace(path + ".tmp", path)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/sglang_stubs.py DIR")
    print(write_stubs(sys.argv[1]))


# ------------------------------------------------------------------------------- fake server
_FAKE_SERVER = r'''"""A FAKE sglang.launch_server for fast client tests (tests/sglang_stubs.py): the same HTTP
endpoints and JSON shapes the SGLang client uses, served by the embedded HF engine."""
import argparse, base64, io, json, os, pickle, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
import torch.multiprocessing.reductions  # noqa: F401
from megatron_corew.rollout.base import SamplingParams
from megatron_corew.rollout.embedded import EmbeddedEngine

p = argparse.ArgumentParser()
p.add_argument("--model-path"); p.add_argument("--host"); p.add_argument("--port", type=int)
a, _ = p.parse_known_args()
with open(os.path.join(a.model_path, "config.json")) as f:
    eos = json.load(f).get("eos_token_id", 2)
engine = EmbeddedEngine(a.model_path, eos if isinstance(eos, list) else [eos])
state = {"version": "default", "session": False}
lock = threading.Lock()


def load_dir(path):
    from safetensors.torch import load_file
    tensors = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(path, fn)))
    engine.update_weights(tensors.items(), 0)


class H(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)

    def do_GET(self):
        if self.path in ("/health", "/health_generate"):
            return self.reply({})
        if self.path == "/get_server_info":
            return self.reply({"internal_states": [{"last_gen_throughput": 1.0}]})
        self.reply({"error": self.path}, 404)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with lock:
            if self.path == "/generate":
                ids = req["input_ids"]; sps = req["sampling_params"]
                sps = sps if isinstance(sps, list) else [sps] * len(ids)
                out = []
                for prompt, sp in zip(ids, sps):
                    engine.eos = set(sp.get("stop_token_ids") or []) | engine.eos
                    t = sp.get("temperature", 1.0)
                    params = SamplingParams(temperature=t or 1.0, top_p=sp.get("top_p", 1.0),
                                            max_new_tokens=sp["max_new_tokens"], greedy=not t,
                                            seed=sp.get("sampling_seed"))
                    g = engine.generate([prompt], params)[0]
                    out.append({"output_ids": g.response_ids, "meta_info": {
                        "finish_reason": {"type": "stop" if g.finish_reason == "stop" else "length"},
                        "output_token_logprobs": [[lp, tok, None] for lp, tok in zip(g.logprobs, g.response_ids)],
                        "weight_version": state["version"]}})
                return self.reply(out)
            if self.path == "/update_weights_from_disk":
                load_dir(req["model_path"])
                state["version"] = req.get("weight_version") or state["version"]
                return self.reply({"success": True, "message": "ok"})
            if self.path == "/begin_weight_update":
                if state["session"]:
                    return self.reply({"success": False, "message": "a weight-update session is already open"}, 400)
                state["session"] = True
                return self.reply({"success": True, "message": "ok"})
            if self.path == "/end_weight_update":
                state["session"] = False
                return self.reply({"success": True, "message": "ok"})
            if self.path == "/update_weights_from_tensor":
                named = pickle.loads(base64.b64decode(req["serialized_named_tensors"][0]))
                engine.update_weights(named, 0)
                if req.get("weight_version"):
                    state["version"] = req["weight_version"]
                return self.reply({"success": True, "message": "ok"})
            if self.path in ("/pause_generation", "/continue_generation", "/flush_cache"):
                return self.reply({"success": True, "message": "ok"})
            if self.path == "/set_fake_version":  # test hook
                state["version"] = req["version"]
                return self.reply({"success": True})
        self.reply({"error": self.path}, 404)


ThreadingHTTPServer((a.host, a.port), H).serve_forever()
'''


def write_fake_sglang(root: str) -> str:
    """A fake ``sglang`` package (``python -m sglang.launch_server`` serves the embedded engine over
    the same HTTP API) for fast tests of the client: put ``root`` first on the server's PYTHONPATH
    and run it with this interpreter."""
    pkg = os.path.join(root, "sglang")
    os.makedirs(pkg, exist_ok=True)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write('"""FAKE sglang for tests (tests/sglang_stubs.py)."""\n')
    with open(os.path.join(pkg, "launch_server.py"), "w") as f:
        f.write(_FAKE_SERVER)
    return root
