"""Tests for megatron_corew.data: parquet loading/validation, paired loading, prompt filtering, the sampler."""

import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_corew.data import SYSTEM_PROMPT, DataError, EpochSampler, Example, load_examples, load_paired_examples
from megatron_corew.demo.tiny_task import generate_problems, verl_rows, write_parquet


def row(question, gt="7", index=0, system=True, **extra):
    prompt = [{"role": "system", "content": SYSTEM_PROMPT}] if system else []
    prompt = prompt + [{"role": "user", "content": question}]
    r = {
        "data_source": "unit",
        "prompt": prompt,
        "ability": "math",
        "reward_model": {"ground_truth": gt, "style": "rule"},
        "extra_info": {"index": index, "split": "train"},
    }
    r.update(extra)
    return r


def write(path, rows, schema=None):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return str(path)


def expected_chatml(question):
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n"
    )


# --------------------------------------------------------------------------------------------------------------
def test_round_trip(tmp_path, tok):
    qs = ["What is 3 + 4?", "Tom has 12 apples and gets 30 more. How many apples does he have now?"]
    path = write(tmp_path / "train.parquet", [row(q, gt=str(i + 7), index=10 + i) for i, q in enumerate(qs)])
    ds = load_examples(path, tok)
    assert len(ds) == 2 and ds.path == path and ds.num_dropped == 0 and ds.num_rows == 2
    for i, (ex, q) in enumerate(zip(ds, qs)):
        assert isinstance(ex, Example)
        assert ex.index == i
        assert ex.messages == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}]
        assert ex.ground_truth == str(i + 7)
        assert ex.data_source == "unit"
        assert ex.extra_info == {"index": 10 + i, "split": "train"}
        assert ex.prompt_text == expected_chatml(q)
        assert tok.decode(ex.prompt_ids) == expected_chatml(q)
        assert ex.prompt_ids == tok(expected_chatml(q), add_special_tokens=False)["input_ids"]
    assert ds[-1].index == 1


def test_reference_release_layout(tmp_path, tok):
    """Files as the Co-rewarding release writes them (pandas -> parquet, extra columns level/type, struct order
    content/role), and rows with more extra_info fields and no system message."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        [
            {
                "level": "Level 3",
                "type": "Algebra",
                "data_source": "DigitalLearningGmbH/MATH-lighteval",
                "prompt": [{"content": SYSTEM_PROMPT, "role": "system"}, {"content": "How many $x$?", "role": "user"}],
                "ability": "math",
                "reward_model": {"ground_truth": "2", "style": "rule"},
                "extra_info": {"index": 0, "split": "test"},
            },
            {
                "level": "Level 1",
                "type": "Algebra",
                "data_source": "DigitalLearningGmbH/MATH-lighteval",
                "prompt": [{"content": "Compute $1+1$.", "role": "user"}],
                "ability": "math",
                "reward_model": {"ground_truth": "\\frac{1}{2}", "style": "rule"},
                "extra_info": {"index": 1, "split": "test"},
            },
        ]
    )
    path = str(tmp_path / "test.parquet")
    df.to_parquet(path)
    ds = load_examples(path, tok)
    assert [e.ground_truth for e in ds] == ["2", "\\frac{1}{2}"]
    assert ds[1].prompt_text == "<|im_start|>user\nCompute $1+1$.<|im_end|>\n<|im_start|>assistant\n"
    assert ds[0].extra_info["split"] == "test"


def test_no_reward_model_column_and_custom_prompt_key(tmp_path, tok):
    rows = [{"question": [{"role": "user", "content": "What is 1 + 1?"}], "data_source": "x"}]
    path = write(tmp_path / "unlabeled.parquet", rows)
    ds = load_examples(path, tok, prompt_key="question")
    assert ds[0].ground_truth is None and ds[0].extra_info == {}


def test_numpy_prompt_values_are_accepted():
    np = pytest.importorskip("numpy")
    from megatron_corew.data.dataset import _check_messages

    value = np.array([{"role": "user", "content": "hi"}], dtype=object)
    assert _check_messages(value, "prompt") == [{"role": "user", "content": "hi"}]


# --------------------------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------------------------
def test_missing_prompt_column(tmp_path, tok):
    path = write(tmp_path / "noprompt.parquet", [{"question": "What is 1 + 1?", "answer": "2"}])
    with pytest.raises(DataError) as e:
        load_examples(path, tok)
    msg = str(e.value)
    assert "noprompt.parquet" in msg and "'prompt'" in msg and "question" in msg and "answer" in msg


def test_empty_prompt(tmp_path, tok):
    rows = [row("What is 1 + 1?", index=0), row("What is 2 + 2?", index=1), row("What is 3 + 3?", index=2)]
    rows[1]["prompt"] = []
    path = write(tmp_path / "empty.parquet", rows)
    with pytest.raises(DataError) as e:
        load_examples(path, tok)
    msg = str(e.value)
    assert "empty.parquet" in msg and "row 1" in msg and "'prompt' must be a non-empty list of chat messages" in msg
    ds = load_examples(path, tok, on_bad_row="skip")
    assert [x.index for x in ds] == [0, 2] and ds.num_skipped == 1


def test_malformed_message(tmp_path, tok):
    schema = pa.schema([("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))])
    path = write(
        tmp_path / "nocontent.parquet",
        [{"prompt": [{"role": "user", "content": "ok"}]}, {"prompt": [{"role": "user", "content": None}]}],
        schema,
    )
    with pytest.raises(DataError, match=r"nocontent\.parquet: row 1: .*content"):
        load_examples(path, tok)


def test_null_prompt(tmp_path, tok):
    rows = [row("What is 1 + 1?"), row("What is 2 + 2?")]
    rows[0]["prompt"] = None
    path = write(tmp_path / "nullprompt.parquet", rows)
    with pytest.raises(DataError, match=r"nullprompt\.parquet: row 0: 'prompt'"):
        load_examples(path, tok)


def test_non_string_ground_truth(tmp_path, tok):
    rows = [row("What is 1 + 1?", index=0), row("What is 2 + 2?", index=1)]
    for r, gt in zip(rows, (2, 4)):
        r["reward_model"] = {"ground_truth": gt, "style": "rule"}  # int64 column
    path = write(tmp_path / "intgt.parquet", rows)
    with pytest.raises(DataError) as e:
        load_examples(path, tok)
    msg = str(e.value)
    assert "intgt.parquet" in msg and "row 0" in msg and "ground_truth" in msg


def test_null_ground_truth_is_an_unlabelled_row(tmp_path, tok):
    """The reference OpenRS release has a null ground truth (row 4303): the file loads, that row is unlabelled."""
    rows = [row("What is 1 + 1?", gt="2"), row("What is 2 + 2?", gt="4"), row("What is 3 + 3?", gt="6")]
    rows[2]["reward_model"] = {"ground_truth": None, "style": "rule"}
    path = write(tmp_path / "nullgt.parquet", rows)
    ds = load_examples(path, tok)
    assert [e.ground_truth for e in ds] == ["2", "4", None] and ds.unlabelled_rows() == [2]
    rephrased = write(
        tmp_path / "nullgt_r.parquet", [row("Two plus two?", gt="2"), row("Four?", gt="4"), row("Six?", gt="6")]
    )
    pairs = load_paired_examples(path, rephrased, tok)
    assert len(pairs) == 3 and pairs[2][0].ground_truth is None and pairs[2][1].ground_truth == "6"


def test_corrupt_file(tmp_path, tok):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(DataError, match="garbage.parquet"):
        load_examples(str(garbage), tok)
    good = write(tmp_path / "good.parquet", [row(f"What is {i} + 1?", index=i) for i in range(20)])
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.parquet"):
        load_examples(str(truncated), tok)
    flipped = bytearray(data)
    flipped[-12:-8] = b"\xff\xff\xff\x7f"  # absurd footer length
    (tmp_path / "footer.parquet").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="footer.parquet"):
        load_examples(str(tmp_path / "footer.parquet"), tok)


def test_missing_file(tmp_path, tok):
    with pytest.raises(DataError, match="nope.parquet: file not found"):
        load_examples(str(tmp_path / "nope.parquet"), tok)


def test_bad_option(tmp_path, tok):
    path = write(tmp_path / "a.parquet", [row("What is 1 + 1?")])
    with pytest.raises(ValueError):
        load_examples(path, tok, on_bad_row="ignore")


def test_paired_different_lengths(tmp_path, tok):
    a = write(tmp_path / "orig.parquet", [row(f"What is {i} + 1?", index=i) for i in range(5)])
    b = write(tmp_path / "reph.parquet", [row(f"Tom has {i} apples and gets 1 more.", index=i) for i in range(4)])
    with pytest.raises(DataError) as e:
        load_paired_examples(a, b, tok)
    msg = str(e.value)
    assert "orig.parquet" in msg and "reph.parquet" in msg and "5" in msg and "4" in msg


def test_paired_misaligned_index(tmp_path, tok):
    a = write(tmp_path / "orig.parquet", [row(f"What is {i} + 1?", index=i) for i in range(6)])
    idx = [0, 1, 2, 4, 3, 5]
    b = write(tmp_path / "reph.parquet", [row(f"Tom has {i} apples and gets 1 more.", index=i) for i in idx])
    with pytest.raises(DataError) as e:
        load_paired_examples(a, b, tok)
    msg = str(e.value)
    assert "row 3" in msg and "orig.parquet" in msg and "reph.parquet" in msg


def test_paired_misaligned_without_index_or_label(tmp_path, tok):
    """No index and no label on either side: the numbers a rephrasing keeps tell aligned from shifted files."""

    def bare(q):
        return {
            "prompt": [{"role": "user", "content": q}],
            "reward_model": {"ground_truth": None},
            "extra_info": {"split": "train"},
        }

    originals = [f"What is {i} + {2 * i + 1}?" for i in range(1, 21)]
    rewrites = [f"Tom has {i} apples and finds {2 * i + 1} more. How many now?" for i in range(1, 21)]
    a = write(tmp_path / "orig.parquet", [bare(q) for q in originals])
    aligned = write(tmp_path / "aligned.parquet", [bare(q) for q in rewrites])
    assert len(load_paired_examples(a, aligned, tok)) == 20
    shifted = write(tmp_path / "shifted.parquet", [bare(q) for q in rewrites[1:] + rewrites[:1]])  # a dropped row
    with pytest.raises(DataError) as e:
        load_paired_examples(a, shifted, tok)
    assert str(e.value).startswith(f"{a} + {shifted}: the paired files look misaligned: only 0% of 20 sampled rows")
    shuffled = [rewrites[k] for k in (7, 3, 15, 0, 11, 19, 5, 9, 13, 1, 17, 6, 2, 18, 10, 4, 14, 8, 16, 12)]
    with pytest.raises(DataError, match="look misaligned"):
        load_paired_examples(a, write(tmp_path / "shuffled.parquet", [bare(q) for q in shuffled]), tok)


def test_paired_different_ground_truth(tmp_path, tok):
    a = write(
        tmp_path / "orig.parquet", [row("What is 1 + 1?", gt="2", index=0), row("What is 2 + 2?", gt="4", index=1)]
    )
    b = write(tmp_path / "reph.parquet", [row("One plus one?", gt="2", index=0), row("Two plus two?", gt="5", index=1)])
    with pytest.raises(DataError, match="row 1"):
        load_paired_examples(a, b, tok)


def test_paired_bad_row_names_file(tmp_path, tok):
    a = write(tmp_path / "orig.parquet", [row("What is 1 + 1?", index=0), row("What is 2 + 2?", index=1)])
    rows = [row("One plus one?", index=0), row("Two plus two?", index=1)]
    rows[1]["prompt"] = []
    b = write(tmp_path / "reph.parquet", rows)
    with pytest.raises(DataError, match=r"reph\.parquet: row 1"):
        load_paired_examples(a, b, tok)


# --------------------------------------------------------------------------------------------------------------
# Prompt-length filtering
# --------------------------------------------------------------------------------------------------------------
def test_prompt_length_filter(tmp_path, tok, caplog):
    short, long = "What is 1 + 1?", "What is 1 + 1? " + "Think very carefully about the apples. " * 10
    rows = [row(short, index=0), row(long, index=1), row(short, index=2), row(long, index=3)]
    path = write(tmp_path / "mixed.parquet", rows)
    n_short = len(load_examples(path, tok)[0].prompt_ids)
    n_long = len(load_examples(path, tok)[1].prompt_ids)
    assert n_short < n_long
    with caplog.at_level(logging.INFO, logger="megatron_corew.data.dataset"):
        ds = load_examples(path, tok, max_prompt_length=n_short)
    assert [e.index for e in ds] == [0, 2] and ds.num_dropped == 2
    assert "dropped 2" in caplog.text
    assert len(load_examples(path, tok, max_prompt_length=n_long)) == 4  # the limit is inclusive
    with pytest.raises(DataError, match="no usable rows"):
        load_examples(path, tok, max_prompt_length=n_short - 1)


def test_paired_length_filter_drops_pair_if_either_is_long(tmp_path, tok):
    short, long = "What is 1 + 1?", "What is 1 + 1? " + "Think very carefully about the apples. " * 10
    a = write(tmp_path / "orig.parquet", [row(short, index=0), row(long, index=1), row(short, index=2)])
    b = write(tmp_path / "reph.parquet", [row(short, index=0), row(short, index=1), row(long, index=2)])
    limit = len(load_examples(a, tok)[0].prompt_ids)
    pairs = load_paired_examples(a, b, tok, max_prompt_length=limit)
    assert len(pairs) == 1 and pairs.num_dropped == 2
    o, r = pairs[0]
    assert o.index == r.index == 0 and o.extra_info["index"] == r.extra_info["index"] == 0
    assert len(load_paired_examples(a, b, tok)) == 3


def test_tiny_task_files_load_as_pairs(tmp_path, tok):
    train, _ = generate_problems(num_train=40, num_val=5, seed=1)
    a, b = str(tmp_path / "train.parquet"), str(tmp_path / "train_rephrased.parquet")
    write_parquet(verl_rows(train, "train", "original"), a)
    write_parquet(verl_rows(train, "train", "rephrased"), b)
    pairs = load_paired_examples(a, b, tok, max_prompt_length=512)
    assert len(pairs) == 40
    for (o, r), p in zip(pairs, train):
        assert o.ground_truth == r.ground_truth == p.ground_truth
        assert o.messages[-1]["content"] == p.original and r.messages[-1]["content"] == p.rephrased
        assert o.data_source == "tiny_arith"


# --------------------------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------------------------
def batches(sampler, n):
    return [sampler.next_batch() for _ in range(n)]


def test_sampler_deterministic_and_epochs():
    s1, s2 = EpochSampler(10, 3, seed=5), EpochSampler(10, 3, seed=5)
    b1 = batches(s1, 9)
    assert b1 == batches(s2, 9)
    assert len(s1) == 3 and all(len(b) == 3 for b in b1)
    epochs = [sum(b1[e * 3 : (e + 1) * 3], []) for e in range(3)]
    for e, items in enumerate(epochs):
        assert len(set(items)) == 9  # no repeats within an epoch (one item left out: drop_last)
        assert items == s1.permutation(e)[:9]
    assert epochs[0] != epochs[1]
    assert s1.epoch == 3 and s1.cursor == 0
    assert batches(EpochSampler(10, 3, seed=6), 3) != b1[:3]


def test_sampler_epochs_of_neighbouring_seeds_differ():
    # seed s epoch 1 must not replay seed s+1 epoch 0 (nor any other seed's epoch), with epoch 0 the plain seed
    import torch

    assert (
        EpochSampler(50, 5, seed=5).permutation(0)
        == torch.randperm(50, generator=torch.Generator().manual_seed(5)).tolist()
    )
    orders = {(s, e): tuple(EpochSampler(50, 5, seed=s).permutation(e)) for s in range(4) for e in range(4)}
    assert len(set(orders.values())) == len(orders)


def test_sampler_no_shuffle_and_keep_last():
    s = EpochSampler(7, 3, shuffle=False, drop_last=False)
    assert batches(s, 4) == [[0, 1, 2], [3, 4, 5], [6], [0, 1, 2]]
    assert len(s) == 3 and s.epoch == 1 and s.cursor == 3
    with pytest.raises(ValueError):
        EpochSampler(2, 3)  # no full batch with drop_last


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("stop", [0, 1, 2, 4, 5])
def test_sampler_resume(drop_last, stop):
    ref = EpochSampler(11, 4, seed=3, drop_last=drop_last)
    full = batches(ref, 12)
    s = EpochSampler(11, 4, seed=3, drop_last=drop_last)
    head = batches(s, stop)
    state = s.state_dict()
    assert set(state) >= {"epoch", "cursor"}
    resumed = EpochSampler(11, 4, seed=3, drop_last=drop_last)
    resumed.load_state_dict(state)
    assert head + batches(resumed, 12 - stop) == full


def test_sampler_rejects_foreign_state():
    s = EpochSampler(10, 2, seed=1)
    s.next_batch()
    with pytest.raises(ValueError):
        EpochSampler(12, 2, seed=1).load_state_dict(s.state_dict())
    with pytest.raises(ValueError):
        EpochSampler(10, 2, seed=2).load_state_dict(s.state_dict())
