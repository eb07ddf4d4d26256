"""HF <-> Megatron weight mappings for the dense Qwen2/2.5, Qwen3 and Llama-3.x families."""
