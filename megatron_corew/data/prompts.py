"""The system prompt and the chat rendering of the training prompts (docs/ALGORITHMS.md section 4).

One place for the instruction every prompt carries, so the converters, the rephraser's answer check and the
demo all render the same text.
"""

from __future__ import annotations

__all__ = ["SYSTEM_PROMPT", "chat_messages", "prompt_text", "prompt_ids"]

SYSTEM_PROMPT = "Let's think step by step and output the final answer within \\boxed{}."


def chat_messages(question: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """The layout of the reference's released files: system prompt, then the bare question."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": question}]


def prompt_text(tokenizer, messages: list[dict], **template_kwargs) -> str:
    """The chat template over ``messages`` with the assistant header, as the policy sees it."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **template_kwargs)


def prompt_ids(tokenizer, messages: list[dict], **template_kwargs) -> list[int]:
    """Token ids of :func:`prompt_text`, encoded without extra special tokens (the template already has them).

    Text first, then encode: ``apply_chat_template(tokenize=True)`` returns a BatchEncoding in transformers 5.
    """
    text = prompt_text(tokenizer, messages, **template_kwargs)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
