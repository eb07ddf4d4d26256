"""The one home of HF-model knowledge: family table, config reading, name/shard mappings, HF and torch_dist IO.

Imports nothing from ``megatron_corew`` (the library uses this package, never the reverse).

- ``config``: HF ``config.json`` -> ``ModelArgs``, layout and family checks, HF rotary frequencies.
- ``families`` (+ ``qwen2``, ``qwen3``, ``llama``): per-family parameters, dist-checkpoint keys, checks.
- ``mapping``: megatron parameter name <-> HF names, TP sharding by kind (used by the live model loaders).
- ``hf_io``: lazy safetensors reading, streaming atomic HF checkpoint writing.
- ``megatron_layout`` / ``megatron_write`` / ``megatron_read``: the torch_dist checkpoint, HF -> it, it -> HF.
- ``atomic``: atomic publish of files, directories and ``latest`` pointers (used by the whole project).
- ``api``: the conversions as functions (tools/convert_*.py, tools/evaluate.py).
"""
