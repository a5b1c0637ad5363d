#!/usr/bin/env python
"""dcinet_d2: I-Net and DC-I-Net person search as a Detectron2 extension.

Detectron2 itself is not on PyPI; `make setup` (tools/setup_env.sh) installs it, or use an existing
installation (it is left alone when importable).
"""

from __future__ import annotations

from setuptools import find_packages, setup

setup(
    name="dcinet_d2",
    version="0.1.0",
    description="I-Net / DC-I-Net person search (Zhang et al., TPAMI 2020) as a Detectron2 plugin",
    packages=find_packages(include=["dcinet_d2", "dcinet_d2.*"]),
    package_data={"dcinet_d2.pretrained": ["*.pth"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=1.10",
        "torchvision",
        "numpy",
        "scipy",  # .mat files of CUHK-SYSU/PRW, Hungarian matching (CBGM)
        "Pillow",
        "tqdm",
        "matplotlib",
        "tabulate",
        "faiss-cpu",  # nearest-neighbour search of the gallery index (dcinet_d2.search)
        # video input and Detectron2's Visualizer; headless: servers lack the GUI libraries
        "opencv-python-headless",
    ],
    # ruff: the linter and formatter `make lint` runs (pinned: its rules change between releases)
    extras_require={"dev": ["pytest>=7", "pytest-timeout", "ruff==0.16.9"]},
)
