#!/usr/bin/env python
"""Install Detectron2 v0.6 as pure Python from PyPI's ``pb1-detectron2==0.6`` source distribution.

Detectron2 is not published on PyPI by its authors. ``pb1-detectron2==0.6`` carries the upstream
v0.6 Python tree without ``layers/csrc`` (the C++/CUDA ops), so its own setup.py cannot build.
This script (see ../shared/ENVIRONMENT.md of the project notes and the README):

1. downloads the sdist with pip (no build, no dependencies),
2. applies the fixes upstream made on its main branch after v0.6 for current numpy/Pillow,
3. adds a placeholder ``detectron2/_C.py`` (the compiled ops are absent; ROIAlign and NMS come
   from torchvision, so Faster R-CNN style models need nothing from it),
4. replaces setup.py by a plain pure-Python one and installs the tree with ``pip --no-deps``,
5. installs the runtime dependencies.

Each fix must apply exactly: if the source does not contain what a fix expects, the script stops
and names the file and the fix, instead of installing a half-patched tree.
Run it with the Python of the target environment; torch must already be installed there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_SPEC = "pb1-detectron2==0.6"
RUNTIME_DEPS = [
    "fvcore<0.1.6",
    "iopath<0.1.10",
    "pycocotools",
    "yacs",
    "tabulate",
    "termcolor",
    "cloudpickle",
    "tqdm",
    "tensorboard",
    "matplotlib",
    "omegaconf",
    "hydra-core",
    "Pillow",
    "setuptools<81",  # model_zoo imports pkg_resources
]

# Files that use numpy aliases removed in numpy 1.24 (upstream 857d5de2, 027099d3, 54dd614e,
# 654570a2).
NUMPY_ALIAS_FILES = [
    "data/build.py",
    "structures/masks.py",
    "utils/visualizer.py",
    "utils/video_visualizer.py",
    "evaluation/sem_seg_evaluation.py",
    "evaluation/pascal_voc_evaluation.py",
    "data/datasets/pascal_voc.py",
]
NUMPY_ALIAS = re.compile(r"\bnp\.(bool|int|float|str)\b(?![_\w])")

# (file, old, new, why): exact textual replacements.
TEXT_FIXES = [
    (
        "data/transforms/transform.py",
        "Image.LINEAR",
        "Image.BILINEAR",
        "Pillow>=10 (upstream ff53992b)",
    ),
    (
        "layers/mask_ops.py",
        "np.array(mask, copy=False)",
        "np.asarray(mask)",
        "numpy>=2 copy=False (upstream 70f45430)",
    ),
    (
        "projects/__init__.py",
        "import importlib\n",
        "import importlib\nimport importlib.abc\n",
        "importlib.abc import (upstream 2a68c056)",
    ),
]

PLACEHOLDER_C = (
    '''"""Placeholder for Detectron2's compiled extension, '''
    '''which this build does not include.

Installed by dcinet_d2's tools/install_detectron2.py. Modules that import ``detectron2._C`` at load
time (``evaluation/fast_eval_api.py``) import fine, ``collect_env`` (``default_setup``) reports the
build; any use of a compiled op raises a clear error.
Use ``COCOEvaluator(..., use_fast_impl=False)``; ROIAlign and NMS come from torchvision.
"""


def get_compiler_version():
    return "none (pure-Python build without C++ ops)"


def get_cuda_version():
    return "none (pure-Python build without CUDA ops)"


def has_cuda():
    return False


def __getattr__(name):
    raise AttributeError(
        f"detectron2._C.{name} is unavailable: this Detectron2 was installed without its C++/CUDA "
        "ops (pure-Python build from pb1-detectron2==0.6). Build Detectron2 from source "
        "(https://github.com/facebookresearch/detectron2) if you need them."
    )
'''
)

PURE_SETUP = (
    """from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.6",
    description="Detectron2 v0.6, pure-Python build (no C++ ops), installed by dcinet_d2",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2.model_zoo": """
    """["configs/**/*.yaml", "configs/**/*.py", "configs/*.yaml"]},
    include_package_data=True,
    python_requires=">=3.7",
)
"""
)


class SetupError(RuntimeError):
    pass


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def download_sdist(dest: Path) -> Path:
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            "-d",
            str(dest),
            SDIST_SPEC,
        ]
    )
    archives = sorted(dest.glob("pb1[-_]detectron2-0.6*.tar.gz"))
    if not archives:
        raise SetupError(f"pip download of {SDIST_SPEC} produced no .tar.gz in {dest}")
    return archives[0]


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    roots = [p for p in dest.iterdir() if p.is_dir()]
    if len(roots) != 1 or not (roots[0] / "detectron2" / "__init__.py").is_file():
        raise SetupError(
            f"{archive} does not contain a single source tree with detectron2/__init__.py"
        )
    return roots[0]


def apply_fixes(pkg: Path) -> None:
    for rel in NUMPY_ALIAS_FILES:
        path = pkg / rel
        text = path.read_text()
        fixed, count = NUMPY_ALIAS.subn(lambda m: m.group(1), text)
        if count == 0:
            raise SetupError(
                f"fix 'numpy aliases' expected np.bool/int/float/str in {path}, found none"
            )
        path.write_text(fixed)
        print(f"  fixed {count} numpy alias(es) in {rel}")
    for rel, old, new, why in TEXT_FIXES:
        path = pkg / rel
        text = path.read_text()
        if old not in text:
            raise SetupError(f"fix '{why}' expected {old!r} in {path}, not found")
        path.write_text(text.replace(old, new))
        print(f"  fixed {rel}: {why}")
    remaining = [
        str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if NUMPY_ALIAS.search(p.read_text())
    ]
    if remaining:
        raise SetupError(f"numpy aliases removed in numpy>=1.24 remain in: {remaining}")
    (pkg / "_C.py").write_text(PLACEHOLDER_C)


def main() -> int:
    try:
        import torch  # noqa: F401  (the sdist's metadata step imports torch)
    except ImportError:
        print(
            "install torch first: this script runs in the environment that will hold detectron2",
            file=sys.stderr,
        )
        return 1
    with tempfile.TemporaryDirectory(prefix="dcinet-d2-build-") as tmp:
        tmp = Path(tmp)
        try:
            archive = download_sdist(tmp / "dl")
            src = unpack(archive, tmp / "src")
            apply_fixes(src / "detectron2")
            for stale in ("setup.cfg", "pyproject.toml"):
                (src / stale).unlink(missing_ok=True)
            (src / "setup.py").write_text(PURE_SETUP)
            shutil.rmtree(src / "build", ignore_errors=True)
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--no-deps",
                    "--no-build-isolation",
                    str(src),
                ]
            )
            run([sys.executable, "-m", "pip", "install", *RUNTIME_DEPS])
        except (SetupError, subprocess.CalledProcessError, OSError) as e:
            print(f"detectron2 installation failed: {e}", file=sys.stderr)
            return 1
    run(
        [
            sys.executable,
            "-c",
            "import detectron2.engine, detectron2.data, detectron2.modeling; "
            "print('detectron2', detectron2.__version__, 'imports')",
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
