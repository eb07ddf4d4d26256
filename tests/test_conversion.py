"""HF <-> Megatron checkpoint conversion (tools/convert_hf_to_megatron.py, tools/convert_megatron_to_hf.py).

Tiny random Qwen2.5, Qwen3 and Llama-3.2 (llama3 rope scaling) models, tied and untied:
- HF -> Megatron, then loaded into a GPTModel whose weights were zeroed, at TP=1, TP=2 and PP=2
  (strict: every checkpoint key consumed, every model key found): logits equal transformers' fp32
  logits within 1e-5 relative;
- Megatron -> HF is bitwise equal to the original tensors and loads with no missing/unexpected keys;
- the trainer's periodic HF export (hf_export.save_hf_checkpoint) from each layout is bitwise equal;
- wrong inputs fail with a clear message before any output (or temp directory) appears.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO, WORKERS, make_tiny_hf_model, run_python_worker

from tools import convert_hf_to_megatron, convert_megatron_to_hf

LLAMA32_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
# name: (arch, tie, extra config)
MODELS = {
    "qwen2": ("qwen2", False, {}),
    "qwen2_tied": ("qwen2", True, {"vocab": 300}),
    "qwen3": ("qwen3", False, {}),
    "qwen3_tied": ("qwen3", True, {}),
    "llama32": ("llama", False, {"rope_parameters": LLAMA32_ROPE}),
    "llama32_tied": ("llama", True, {"rope_parameters": LLAMA32_ROPE, "vocab": 300}),
}
LAYOUTS = {"tp1": (1, []), "tp2": (2, ["--tp", "2"]), "pp2": (2, ["--pp", "2"])}


def _worker(job, spec, tmp, nproc=1, extra=(), out=None, timeout=300):
    spec_path = os.path.join(tmp, f"{job}-{nproc}-{'_'.join(extra) or 'base'}-spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    cmd = [job, "--spec", spec_path] + (["--out", out] if out else []) + list(extra)
    run_python_worker(os.path.join(WORKERS, "convert_worker.py"), cmd, nproc, timeout)
    return torch.load(out) if out else None


def _tokens(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (2, 11), generator=g).tolist()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tok):
    """Every tiny model converted HF -> Megatron -> HF in one worker process."""
    root = tmp_path_factory.mktemp("conv")
    spec = []
    for i, (name, (arch, tie, over)) in enumerate(MODELS.items()):
        over = dict(over)
        vocab = over.pop("vocab", 100)
        hf = make_tiny_hf_model(str(root / f"hf_{name}"), arch, tie=tie, vocab=vocab, seed=i, **over)
        spec.append(
            {
                "name": name,
                "hf": hf,
                "ckpt": str(root / f"mc_{name}"),
                "back": str(root / f"back_{name}"),
                "tokens": _tokens(vocab, i),
            }
        )
    # a checkpoint written for TP=2 / PP=2 (vocab padded to 256-multiples), loaded at other layouts too
    first = spec[0]
    spec.append(
        dict(
            first,
            name="qwen2_for_tp2pp2",
            ckpt=str(root / "mc_qwen2_tp2pp2"),
            back=str(root / "back_qwen2_tp2pp2"),
            tp=2,
            pp=2,
        )
    )
    # stored in bf16: the back conversion writes bf16 and says so in config.json
    # (its logits reference: transformers in fp32 on the bf16-rounded weights, i.e. the back-converted model)
    spec.append(
        dict(
            spec[2],
            name="qwen3_as_bf16",
            ckpt=str(root / "mc_qwen3_bf16"),
            back=str(root / "back_qwen3_bf16"),
            dtype="bfloat16",
            ref=str(root / "back_qwen3_bf16"),
        )
    )
    # a model with tokenizer files (the tiny task's tokenizer: CI has no assets/), small output shards
    asset = make_tiny_hf_model(str(root / "hf_asset"), "qwen3", vocab=512, seed=99)
    tok.save_pretrained(asset)
    spec.append(
        {
            "name": "asset",
            "hf": asset,
            "ckpt": str(root / "mc_asset"),
            "back": str(root / "back_asset"),
            "tokens": _tokens(512, 99),
            "max_shard_bytes": 200_000,
        }
    )
    _worker("convert", spec, str(root))
    return {"root": str(root), "spec": {e["name"]: e for e in spec}}


def _safetensors(model_dir):
    from checkpoints_conversion.hf_io import HFCheckpointReader

    r = HFCheckpointReader(model_dir)
    return {k: r.get(k) for k in r.keys()}


def _assert_bitwise(orig_dir, new_dir):
    a, b = _safetensors(orig_dir), _safetensors(new_dir)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.dist
@pytest.mark.parametrize("name", list(MODELS) + ["qwen2_for_tp2pp2", "asset"])
def test_round_trip_is_bitwise_and_loads_cleanly(converted, name):
    from transformers import AutoModelForCausalLM

    e = converted["spec"][name]
    _assert_bitwise(e["hf"], e["back"])
    model, info = AutoModelForCausalLM.from_pretrained(e["back"], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with open(os.path.join(e["back"], "model.safetensors.index.json")) as f:
        index = json.load(f)
    for shard in set(index["weight_map"].values()):
        assert os.path.isfile(os.path.join(e["back"], shard))
    for fname in ("config.json", "generation_config.json"):
        assert os.path.isfile(os.path.join(e["back"], fname))


@pytest.mark.dist
def test_bf16_storage(converted):
    e = converted["spec"]["qwen3_as_bf16"]
    orig, back = _safetensors(e["hf"]), _safetensors(e["back"])
    assert sorted(orig) == sorted(back)
    for k, t in orig.items():
        assert back[k].dtype == torch.bfloat16 and torch.equal(back[k], t.to(torch.bfloat16)), k
    with open(os.path.join(e["back"], "config.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"
    with open(os.path.join(e["ckpt"], "model_args.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"


@pytest.mark.dist
def test_checkpoint_layout_and_side_files(converted):
    spec = converted["spec"]
    e = spec["asset"]
    files = set(os.listdir(e["ckpt"]))
    assert {"metadata.json", ".metadata", "common.pt", "model_args.json", "hf_config"} <= files
    assert any(f.endswith(".distcp") for f in files)
    for fname in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        assert os.path.isfile(os.path.join(e["ckpt"], "hf_config", fname)), fname
        assert os.path.isfile(os.path.join(e["back"], fname)), fname
    shards = [f for f in os.listdir(e["back"]) if f.endswith(".safetensors")]
    assert len(shards) > 1  # max_shard_bytes honoured
    with open(os.path.join(spec["qwen2_for_tp2pp2"]["ckpt"], "model_args.json")) as f:
        rec = json.load(f)
    assert rec["padded_vocab_size"] == 256 and rec["target_tensor_parallel_size"] == 2
    assert rec["qkv_bias"] and not rec["qk_norm"] and rec["vocab_size"] == 100
    # no temp directories left behind
    assert not [d for d in os.listdir(converted["root"]) if ".tmp-" in d]


def _hf_logits(model_dir, tokens):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float()


@pytest.mark.dist
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_megatron_logits_match_transformers(converted, layout, tmp_path):
    nproc, extra = LAYOUTS[layout]
    # the trainer's periodic export is exercised from every layout for two of the models
    exported = {name: str(tmp_path / f"export_{name}") for name in ("qwen3", "llama32_tied")}
    spec = [dict(e, export=exported[e["name"]]) if e["name"] in exported else e for e in converted["spec"].values()]
    got = _worker("logits", spec, str(tmp_path), nproc, extra, out=str(tmp_path / "logits.pt"))
    assert sorted(got) == sorted(e["name"] for e in spec)
    for e in spec:
        ref = _hf_logits(e.get("ref", e["hf"]), e["tokens"])
        mine = got[e["name"]]
        assert mine.shape == ref.shape, (e["name"], mine.shape, ref.shape)
        scale = ref.abs().max()
        err = (mine - ref).abs().max()
        print(f"{layout} {e['name']}: relative logits error {float(err / scale):.2g}")
        assert err <= 1e-5 * scale, (layout, e["name"], float(err), float(scale))
        assert torch.allclose(mine, ref, rtol=1e-5, atol=1e-5 * float(scale)), (layout, e["name"])
    for name, out_dir in exported.items():
        step_dir = os.path.realpath(os.path.join(out_dir, "latest"))  # a symlink to the newest export
        _assert_bitwise(converted["spec"][name]["hf"], step_dir)


@pytest.mark.dist
def test_rl_training_checkpoint_converts_to_hf(converted, tmp_path):
    """A checkpoint written by the RL trainer at TP=2 (model + optimizer + KL anchor) converts to HF
    with exactly the trained weights."""
    from checkpoints_conversion.hf_io import HFCheckpointReader

    e = converted["spec"]["qwen3_tied"]
    spec = {"hf": e["hf"], "save": str(tmp_path / "rl"), "weights": str(tmp_path / "trained.pt")}
    _worker("train_save", spec, str(tmp_path), 2, ["--tp", "2"])
    out = str(tmp_path / "hf")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "convert_megatron_to_hf.py"),
            "--load",
            spec["save"],
            "--hf-config-dir",
            e["hf"],
            "--save",
            out,
            "--no-progress-bar",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained, r, orig = torch.load(spec["weights"]), HFCheckpointReader(out), HFCheckpointReader(e["hf"])
    assert sorted(trained) == sorted(r.keys())
    for k, t in trained.items():
        assert torch.equal(t, r.get(k)), k
    assert not all(torch.equal(orig.get(k), r.get(k)) for k in trained)  # the step changed the weights


# ------------------------------------------------------------------------------------------- bad inputs


def _run_main(module, argv, capsys):
    from megatron_corew.policy import cpu_compat

    cpu_compat.apply()  # as main() does first; its one-line notice is not part of the error output
    capsys.readouterr()  # drop what the fixtures printed
    rc = module.main(argv)
    err = capsys.readouterr().err
    return rc, err


def _assert_nothing_written(out):
    parent = os.path.dirname(out)
    assert not os.path.exists(out)
    assert not [d for d in os.listdir(parent) if ".tmp-" in d], os.listdir(parent)


@pytest.fixture
def sharded_qwen3(tmp_path):
    """A tiny Qwen3 saved in several safetensors shards with an index."""
    from transformers import AutoModelForCausalLM

    src = make_tiny_hf_model(str(tmp_path / "single"), "qwen3")
    model = AutoModelForCausalLM.from_pretrained(src)
    out = str(tmp_path / "sharded")
    model.save_pretrained(out, max_shard_size="100KB")
    assert len([f for f in os.listdir(out) if f.endswith(".safetensors")]) > 1
    return out


def test_missing_shard_file_fails_before_output(sharded_qwen3, tmp_path, capsys):
    shard = sorted(f for f in os.listdir(sharded_qwen3) if f.endswith(".safetensors"))[1]
    os.remove(os.path.join(sharded_qwen3, shard))
    out = str(tmp_path / "outdir" / "ckpt")
    os.makedirs(os.path.dirname(out))
    rc, err = _run_main(convert_hf_to_megatron, ["--hf-dir", sharded_qwen3, "--save", out], capsys)
    assert rc == 2 and "missing" in err and shard in err, err
    _assert_nothing_written(out)


def test_truncated_shard_fails_before_output(sharded_qwen3, tmp_path, capsys):
    shard = os.path.join(sharded_qwen3, sorted(f for f in os.listdir(sharded_qwen3) if f.endswith(".safetensors"))[0])
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 100)
    out = str(tmp_path / "outdir" / "ckpt")
    os.makedirs(os.path.dirname(out))
    rc, err = _run_main(convert_hf_to_megatron, ["--hf-dir", sharded_qwen3, "--save", out], capsys)
    assert rc == 2 and "truncated" in err, err
    _assert_nothing_written(out)


def _edit_config(model_dir, **changes):
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(path, "w") as f:
        json.dump(cfg, f)


@pytest.mark.parametrize("case", ["shape", "tp_heads", "tp_kv_heads", "pp_layers", "arch", "rope", "tied_config"])
def test_bad_hf_input_fails_before_output(tmp_path, capsys, case):
    hf = make_tiny_hf_model(str(tmp_path / "hf"), "qwen2")
    argv = ["--hf-dir", hf]
    expect = {
        "shape": "intermediate_size",
        "tp_heads": "does not divide num_attention_heads",
        "tp_kv_heads": "does not divide num_key_value_heads",
        "pp_layers": "does not divide num_hidden_layers",
        "arch": "unsupported architecture",
        "rope": "rope type",
        "tied_config": "lm_head.weight",
    }[case]
    if case == "shape":
        _edit_config(hf, intermediate_size=96)
        expect = "config implies"
    elif case == "tp_heads":
        argv += ["--target-tensor-parallel-size", "3"]
    elif case == "tp_kv_heads":
        _edit_config(hf, num_key_value_heads=1)
        argv += ["--target-tensor-parallel-size", "2"]
    elif case == "pp_layers":
        argv += ["--target-pipeline-parallel-size", "3"]
    elif case == "arch":
        _edit_config(hf, model_type="gpt2", architectures=["GPT2LMHeadModel"])
    elif case == "rope":
        _edit_config(
            hf,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "rope_theta": 10000.0,
                "original_max_position_embeddings": 64,
            },
        )
    elif case == "tied_config":
        _edit_config(hf, tie_word_embeddings=True)
        expect = "differs from model.embed_tokens.weight"  # the untied lm_head would silently be dropped
    out = str(tmp_path / "out")
    rc, err = _run_main(convert_hf_to_megatron, argv + ["--save", out], capsys)
    assert rc == 2 and err.startswith("error:"), err
    if case == "tp_kv_heads":  # one kv head is still representable at TP=1, but not split over 2
        assert "does not divide" in err, err
    else:
        assert expect in err, err
    _assert_nothing_written(out)


def test_existing_output_is_not_replaced_without_overwrite(tmp_path, capsys):
    hf = make_tiny_hf_model(str(tmp_path / "hf"), "llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc, err = _run_main(convert_hf_to_megatron, ["--hf-dir", hf, "--save", str(out)], capsys)
    assert rc == 2 and "--overwrite" in err
    assert os.listdir(out) == ["keep.txt"]


@pytest.mark.dist
@pytest.mark.parametrize("case", ["other_shape", "tied_mismatch", "missing_data_file", "no_config"])
def test_bad_megatron_input_fails_before_output(converted, tmp_path, capsys, case):
    import shutil

    src = converted["spec"]["qwen2"]
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(src["ckpt"], ckpt)
    cfg_dir = str(tmp_path / "cfg")
    shutil.copytree(os.path.join(ckpt, "hf_config"), cfg_dir)
    argv = ["--load", ckpt, "--hf-config-dir", cfg_dir]
    if case == "other_shape":
        _edit_config(cfg_dir, intermediate_size=256)
        expect = "does not match config"
    elif case == "tied_mismatch":
        _edit_config(cfg_dir, tie_word_embeddings=True)
        expect = "tie"
    elif case == "missing_data_file":
        os.remove(os.path.join(ckpt, next(f for f in os.listdir(ckpt) if f.endswith(".distcp"))))
        expect = "missing"
    else:
        argv = ["--load", str(tmp_path / "cfg")]  # an HF dir is not a megatron checkpoint
        expect = "not a Megatron distributed checkpoint"
    out = str(tmp_path / "out")
    rc, err = _run_main(convert_megatron_to_hf, argv + ["--save", out], capsys)
    assert rc == 2 and expect in err, err
    _assert_nothing_written(out)


# ------------------------------------------------------------------------------------------- package boundary


def test_checkpoints_conversion_imports_nothing_from_megatron_corew():
    """The arrow runs one way: megatron_corew uses checkpoints_conversion, never the reverse."""
    code = (
        "import importlib, pkgutil, sys, checkpoints_conversion as cc\n"
        "for m in pkgutil.iter_modules(cc.__path__):\n"
        "    importlib.import_module('checkpoints_conversion.' + m.name)\n"
        "print(sorted(n for n in sys.modules if n == 'megatron_corew' or n.startswith('megatron_corew.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout
    import ast
    import glob

    lazy = []  # imports inside functions, which importing the modules does not run
    for path in glob.glob(os.path.join(REPO, "checkpoints_conversion", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            lazy += [f"{os.path.basename(path)}: {n}" for n in names if n.split(".")[0] == "megatron_corew"]
    assert not lazy, lazy
