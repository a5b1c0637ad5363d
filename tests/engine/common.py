"""Helpers of the training tests: configs from the repository's YAML files, the synthetic data."""

from __future__ import annotations

import os

from dcinet_d2.data.synthetic import ensure_synthetic_datasets
from dcinet_d2.engine.cli import argument_parser, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quick_cfg(name: str, output_dir: str, *overrides: str):
    """The quick schedule ``configs/quick_schedules/<name>_instant_test.yaml`` (frozen), after
    making sure the default synthetic datasets exist (generated once, about 10 s)."""
    ensure_synthetic_datasets(progress=False)
    path = os.path.join(REPO, "configs", "quick_schedules", f"{name}_instant_test.yaml")
    args = argument_parser().parse_args(
        ["--config-file", path, "OUTPUT_DIR", output_dir, *overrides]
    )
    return setup_cfg(args)
