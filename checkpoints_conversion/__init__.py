"""HF <-> Megatron weight mappings for the dense Qwen2/2.5, Qwen3 and Llama-3.x families.

- ``mapping``: megatron parameter name <-> HF names, TP sharding by kind (used by the live model loaders).
- ``families`` (+ ``qwen2``, ``qwen3``, ``llama``): per-family parameters, dist-checkpoint keys, checks.
- ``hf_io``: lazy safetensors reading, streaming atomic HF checkpoint writing.
- ``megatron_io``: streaming HF <-> Megatron torch_dist checkpoint conversion (tools/convert_*.py).
"""
