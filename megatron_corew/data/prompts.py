"""The system prompt and the chat rendering of the training prompts (docs/ALGORITHMS.md section 4).

One place for the instruction every prompt carries, so the converters, the rephraser's answer check and the
demo all render the same text.
"""

from __future__ import annotations

__all__ = ["SYSTEM_PROMPT", "FEW_SHOT_ANSWER", "chat_messages", "few_shot_messages", "prompt_text", "prompt_ids"]

SYSTEM_PROMPT = "Let's think step by step and output the final answer within \\boxed{}."


def chat_messages(question: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """The layout of the reference's released files: system prompt, then the bare question."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": question}]


FEW_SHOT_ANSWER = "The answer is \\boxed{{{answer}}}."  # a worked example's reply; {answer}: its ground truth


def few_shot_messages(
    question: str,
    shots: list[tuple[str, str]],
    style: str = "chat",
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "system",
) -> list[dict]:
    """The question after worked examples ``shots`` [(question, reply)], so a small model sees the answer format.

    ``chat``: each example is a user turn and an assistant turn before the question (after the system prompt);
    ``inline``: one user turn holding "Question: ... / Answer: ..." pairs, then the question. With
    ``prompt_style="user"`` the instruction follows the question instead of being a system message."""
    instruction = system_prompt if prompt_style == "user" and system_prompt else None
    system = [{"role": "system", "content": system_prompt}] if system_prompt and prompt_style == "system" else []
    last = question + (" " + instruction if instruction else "")
    if style == "chat":
        turns = []
        for q, reply in shots:
            turns += [
                {"role": "user", "content": q + (" " + instruction if instruction else "")},
                {"role": "assistant", "content": reply},
            ]
        return system + turns + [{"role": "user", "content": last}]
    if style == "inline":
        text = "".join(f"Question: {q}\nAnswer: {reply}\n\n" for q, reply in shots) + f"Question: {last}"
        return system + [{"role": "user", "content": text}]
    raise ValueError(f"few-shot style must be 'chat' or 'inline', got {style!r}")


def prompt_text(tokenizer, messages: list[dict], **template_kwargs) -> str:
    """The chat template over ``messages`` with the assistant header, as the policy sees it."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **template_kwargs)


def prompt_ids(tokenizer, messages: list[dict], **template_kwargs) -> list[int]:
    """Token ids of :func:`prompt_text`, encoded without extra special tokens (the template already has them).

    Text first, then encode: ``apply_chat_template(tokenize=True)`` returns a BatchEncoding in transformers 5.
    """
    text = prompt_text(tokenizer, messages, **template_kwargs)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
