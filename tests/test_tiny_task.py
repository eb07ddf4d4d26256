"""Quick checks of the bundled tiny task (tokenizer, problems, parquet rows, model, a 2-step end-to-end build)."""

import os

import pyarrow.parquet as pq
import pytest

from megatron_corew.data.prompts import chat_messages, prompt_ids
from megatron_corew.demo import tiny_bundle, tiny_model
from megatron_corew.demo import tiny_task as tt


def test_digits_are_single_tokens(tok):
    toks = tok.tokenize("What is 137 + 4509? \\boxed{82}")
    digits = [t for t in toks if any(c.isdigit() for c in t)]
    assert digits == list("137") + list("4509") + list("82")
    assert tok.decode(tok("37 + 45 = 82.", add_special_tokens=False)["input_ids"]) == "37 + 45 = 82."


def test_special_tokens_and_template(tok):
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    ids = tok("<|im_start|><|im_end|><|endoftext|>", add_special_tokens=False)["input_ids"]
    assert ids == [tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")]
    msgs = chat_messages("What is 3 + 4?")
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nLet's think step by step and output the final answer within \\boxed{}."
        "<|im_end|>\n<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        tok.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
        == text[: -len("<|im_start|>assistant\n")]
    )
    assert 256 <= len(tok) <= 512


def test_tokenizer_is_deterministic_and_reloads(tok, tmp_path):
    from transformers import AutoTokenizer

    again = tt.build_tokenizer()
    text = "Mia had 45 dollars and spent 12 dollars. How many dollars does she have now?"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    tok.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    msgs = chat_messages(text)
    assert prompt_ids(loaded, msgs) == prompt_ids(tok, msgs)
    assert loaded.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_problems():
    train, val = tt.generate_problems(num_train=300, num_val=50, seed=3)
    assert (train, val) == tt.generate_problems(num_train=300, num_val=50, seed=3)
    key = lambda p: (p.a, p.op, p.b)  # noqa: E731
    assert not {key(p) for p in train} & {key(p) for p in val}
    for p in train + val:
        assert p.answer >= 0 and 1 <= p.a <= tt.MAX_OPERAND and 1 <= p.b <= tt.MAX_OPERAND
        assert f"{p.a}" in p.original and f"{p.a}" in p.rephrased and f"{p.b}" in p.rephrased
        assert p.original != p.rephrased
        assert tt.extract_last_boxed(p.solution) == p.ground_truth
    assert len({p.rephrased.split(str(p.a))[0] for p in train}) > 5  # several scenarios


def test_terse_targets_only_for_terse_openings(tok):
    """The warm start's format noise: an unboxed (ungradeable) target exists exactly for the TERSE_OPENINGS styles,
    in both phrasings, and it states the right result."""
    train, _ = tt.generate_problems(num_train=60, num_val=1, seed=3)
    items = tiny_model._sft_items(tok, train)
    questions = [p.question(ph) for p in train for ph in ("original", "rephrased")]
    assert [terse is not None for _, _, terse in items] == [q.startswith(tt.TERSE_OPENINGS) for q in questions]
    assert 0 < sum(terse is not None for _, _, terse in items) < len(items)
    for p in train:
        assert tt.extract_last_boxed(p.terse_solution) is None and p.terse_solution.endswith(f"= {p.answer}.")
        assert p.solution.startswith(p.terse_solution)


def test_grading():
    assert tt.extract_last_boxed("a \\boxed{1} b \\boxed{{2}3}") == "{2}3"
    assert tt.extract_last_boxed("no box") is None
    assert tt.extract_last_boxed("\\boxed{12") is None
    assert tt.is_correct("3 + 4 = 7. The answer is \\boxed{7}.", "7")
    assert not tt.is_correct("The answer is \\boxed{8}.", "7")


def test_rows_schema(tmp_path):
    train, _ = tt.generate_problems(num_train=10, num_val=2)
    for phrasing in ("original", "rephrased"):
        path = str(tmp_path / f"{phrasing}.parquet")
        tt.write_parquet(tt.verl_rows(train, "train", phrasing), path)
        t = pq.read_table(path)
        assert t.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        r = t.to_pylist()[3]
        assert r["data_source"] == "tiny_arith" and r["ability"] == "math"
        assert r["prompt"][0] == {"content": tt.SYSTEM_PROMPT, "role": "system"}
        assert r["prompt"][1] == {"content": train[3].question(phrasing), "role": "user"}
        assert r["reward_model"] == {"ground_truth": train[3].ground_truth, "style": "rule"}
        assert r["extra_info"] == {"index": 3, "split": "train"}


@pytest.mark.parametrize("arch", sorted(tiny_model.ARCHS))
def test_build_model(tok, arch):
    import torch

    m = tiny_model.build_model(tok, arch)
    assert m.config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert m.config.pad_token_id == tok.pad_token_id and not m.config.tie_word_embeddings
    with torch.no_grad():
        assert m(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, len(tok))


@pytest.mark.e2e
def test_make_tiny_task_end_to_end(tmp_path):
    """Tiny settings (2 SFT steps): layout, reload, skip-if-present, --force, no stray temp dirs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = str(tmp_path / "tiny")
    kw = dict(sft_steps=2, num_train=16, num_val=4, batch_size=8, num_samples=2, log=lambda *a: None)
    m = tiny_bundle.make_tiny_task(out, **kw)
    assert m is not None and 0.0 <= m["greedy_acc_original"] <= 1.0 and "mixed_frac_rephrased" in m
    assert tiny_bundle.is_complete(out)
    for name in ("train", "train_rephrased", "val", "val_rephrased"):
        assert pq.read_table(os.path.join(out, "data", f"{name}.parquet")).num_rows == (16 if "train" in name else 4)
    AutoTokenizer.from_pretrained(os.path.join(out, "model"))
    model = AutoModelForCausalLM.from_pretrained(os.path.join(out, "model"))
    assert model.generation_config.eos_token_id == model.config.eos_token_id
    assert tiny_bundle.make_tiny_task(out, **kw) is None  # already there: skipped
    assert tiny_bundle.make_tiny_task(out, force=True, **kw) is not None
    assert sorted(os.listdir(tmp_path)) == ["tiny"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        tiny_bundle.make_tiny_task(str(other), force=True, **kw)
    assert (other / "notes.txt").read_text() == "keep me"
