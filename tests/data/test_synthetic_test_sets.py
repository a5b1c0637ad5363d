"""dcinet_d2.data.synthetic.ensure_synthetic_test_set: the 200-query validation and held-out
sets are made where the dataset registry looks for them, with their own seeds and sizes."""

from __future__ import annotations

import pytest

from dcinet_d2.data import synthetic
from dcinet_d2.data.synthetic import ensure


def test_unknown_set_is_refused():
    with pytest.raises(ValueError, match="unknown synthetic test set 'synthetic'"):
        synthetic.ensure_synthetic_test_set("synthetic")


@pytest.mark.parametrize("folder, seed", [("synthetic_val", 2000), ("synthetic_heldout", 3000)])
def test_sets_are_generated_under_detectron2_datasets(folder, seed, tmp_path, monkeypatch):
    calls = []

    def fake_generate(root, **kwargs):
        calls.append((root, kwargs))
        return {"root": root}

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    monkeypatch.setattr(ensure, "generate_cuhk_sysu", fake_generate)
    stats = synthetic.ensure_synthetic_test_set(folder, progress=False)
    ((root, kwargs),) = calls
    assert root == str(tmp_path / folder / "CUHK-SYSU") and stats["generated"]
    assert kwargs["seed"] == seed
    assert (kwargs["num_images"], kwargs["pool_size"]) == (430, 400)
    assert (kwargs["num_train_ids"], kwargs["num_test_ids"]) == (10, 200)
    assert tuple(kwargs["gallery_sizes"]) == (50, 100)
    # an existing folder is left as it is
    (tmp_path / folder / "CUHK-SYSU").mkdir(parents=True)
    assert not synthetic.ensure_synthetic_test_set(folder, progress=False)["generated"]
    assert len(calls) == 1
