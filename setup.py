"""megatron_corew: Co-rewarding and GRPO baselines on megatron-core.

Install on a CPU machine (Python 3.11): ``pip install torch==2.13.0 && pip install -e .``
(the torch pin keeps pip on the local CPU build; GPU machines may bring a newer CUDA torch).
megatron-core: 0.17+ declares Python >= 3.12, so on 3.11 pip resolves 0.16.1, which we support and
test; on 3.12 the newest release installs and the same code runs (see README).
"""
from setuptools import find_packages, setup

setup(
    name="megatron_corew",
    version="0.1.0",
    description="Self-supervised RL (Co-rewarding I/II, GRPO baselines) on megatron-core",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_corew", "megatron_corew.*", "checkpoints_conversion",
                                    "checkpoints_conversion.*"]),
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
        "test": ["pytest", "pytest-timeout", "math-verify", "champ-dataset", "reasoning-gym"],
        "gpu": ["transformer-engine[pytorch]"],
    },
)
