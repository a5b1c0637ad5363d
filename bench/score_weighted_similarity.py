#!/usr/bin/env python
"""Detection confidence in the search similarity, measured offline on a saved predictions file.

    python bench/score_weighted_similarity.py --dataset synthetic_val_cuhk_sysu_test \\
        --predictions OUT/inference/<dataset>/person_search_predictions.pth

The protocol ranks a query's gallery detections by the dot product of their embeddings. Scaling
each gallery embedding by ``score ** gamma`` (its detection score) ranks by ``score ** gamma *
cos(query, detection)``: a box the detector doubts (part of a person, a duplicate, background)
falls behind a confident box of equal similarity. Norm-aware embeddings (NAE, Chen et al. 2020)
build the same idea into the model. Detection metrics do not change (the scores are untouched).
Per gamma, the search metrics of the learned embeddings and of colour histograms of the same
boxes (dcinet_d2.evaluation.colour_baseline) weighted alike, so that both get the same help.
gamma = 0 is unit embeddings (a file written with MODEL.REID.EMBED_SCORE_POWER p > 0 is made unit
again first). Used for docs/reid_recipe.md; chosen on the validation split.
"""

from __future__ import annotations

import numpy as np
from offline_eval import SavedPredictions

from dcinet_d2.evaluation.colour_baseline import histogram_predictions
from dcinet_d2.evaluation.predictions import score_weighted

GAMMAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def score_weighted_gallery(gallery: dict, gamma: float, file_power: float = 0.0) -> dict:
    """``gallery`` with every embedding made a unit vector again (when the file holds embeddings
    weighted by ``score ** file_power``) and multiplied by its detection score to the ``gamma``."""

    def change(entry):
        embeds = np.asarray(entry["embeds"], dtype=np.float32)
        if file_power:
            norms = np.linalg.norm(embeds, axis=1, keepdims=True)
            embeds = embeds / np.maximum(norms, np.finfo(np.float32).tiny)  # score 0: stays 0
        return {**entry, "embeds": score_weighted(embeds, entry["scores"], gamma)}

    return {image_id: change(entry) for image_id, entry in gallery.items()}


def main():
    saved = SavedPredictions(__doc__)
    file_power = float(saved.predictions["meta"].get("embed_score_power", 0.0))
    hist = histogram_predictions(saved.predictions, saved.dicts, score_power=0.0)
    print("| gamma | learned: search mAP / top-1 | colour histogram, same boxes: mAP / top-1 |")
    print("|---|---|---|")
    for gamma in GAMMAS:
        learned = saved.evaluate(
            score_weighted_gallery(saved.predictions["gallery"], gamma, file_power)
        )["search"]
        colour = saved.evaluate(score_weighted_gallery(hist["gallery"], gamma), hist["queries"])[
            "search"
        ]
        print(
            f"| {gamma:g} | {learned['mAP']:.1f} / {learned['top1']:.1f} | "
            f"{colour['mAP']:.1f} / {colour['top1']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
