"""Writers of tiny CUHK-SYSU / PRW files in the official formats, for reader tests (and a
summary of what a reader returned).

Written independently of the synthetic generator so that the readers are tested against the
format as documented (DESIGN.md section 3), not against our own generator's interpretation.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from scipy.io import savemat


def struct_array(fields: list[str], rows: list[tuple]) -> np.ndarray:
    """A MATLAB 1 x n struct array (numpy structured array with object fields)."""
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f, v in zip(fields, row):
            arr[0, i][f] = v
    return arr


def cell_column(values: list) -> np.ndarray:
    arr = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        arr[i, 0] = v
    return arr


def box(x, y, w, h) -> np.ndarray:
    return np.array([[x, y, w, h]], dtype=np.float64)


EMPTY = np.zeros((0, 0), dtype=np.float64)


def write_image(path: str, width: int, height: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 150)).save(path)


def write_cuhk_sysu(
    root: str,
    images: dict,
    pool: list,
    train: list,
    queries: list,
    sizes: dict,
    gallery_sizes=(50,),
) -> None:
    """images: {name: [(x,y,w,h), ...]}; train: [(idname, [(name, (x,y,w,h)), ...])];
    queries: [(idname, name, (x,y,w,h), [(gallery name, (x,y,w,h) or None), ...])] (one gallery,
    written padded/cut to each size in gallery_sizes is NOT done: the gallery is written as
    given)."""
    ann = os.path.join(root, "annotation")
    os.makedirs(os.path.join(ann, "test", "train_test"), exist_ok=True)
    for name, (w, h) in sizes.items():
        write_image(os.path.join(root, "Image", "SSM", name), w, h)
    img_rows = []
    for name, boxes in images.items():
        box_struct = struct_array(
            ["idlocate", "ishard"], [(box(*b), np.array([[0.0]])) for b in boxes]
        )
        img_rows.append((np.array([name]), np.array([[float(len(boxes))]]), box_struct))
    savemat(
        os.path.join(ann, "Images.mat"),
        {"Img": struct_array(["imname", "nAppear", "box"], img_rows)},
    )
    savemat(os.path.join(ann, "pool.mat"), {"pool": cell_column([np.array([n]) for n in pool])})
    cells = []
    for idname, scenes in train:
        scene = struct_array(
            ["imname", "idlocate", "ishard"],
            [(np.array([n]), box(*b), np.array([[0.0]])) for n, b in scenes],
        )
        cells.append(
            struct_array(
                ["idname", "nAppear", "scene"],
                [(np.array([idname]), np.array([[float(len(scenes))]]), scene)],
            )
        )
    savemat(os.path.join(ann, "test", "train_test", "Train.mat"), {"Train": cell_column(cells)})
    for n in gallery_sizes:
        rows = []
        for idname, qname, qbox, gallery in queries:
            q = struct_array(
                ["imname", "idlocate", "ishard", "idname"],
                [(np.array([qname]), box(*qbox), np.array([[0.0]]), np.array([idname]))],
            )
            g = struct_array(
                ["imname", "idlocate", "ishard"],
                [
                    (np.array([gn]), EMPTY if gb is None else box(*gb), np.array([[0.0]]))
                    for gn, gb in gallery
                ],
            )
            rows.append((q, g))
        savemat(
            os.path.join(ann, "test", "train_test", f"TestG{n}.mat"),
            {f"TestG{n}": struct_array(["Query", "Gallery"], rows)},
        )


def write_prw(
    root: str,
    train_frames: dict,
    test_frames: dict,
    train_ids: list,
    query_lines: list,
    sizes: dict,
    keys: dict | None = None,
    newline: str = "\r\n",
) -> None:
    """train_frames/test_frames: {frame (no ext): [[id, x, y, w, h], ...]}; keys: {frame: mat
    key}."""
    keys = keys or {}
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for frame, rows in {**train_frames, **test_frames}.items():
        w, h = sizes[frame]
        write_image(os.path.join(root, "frames", frame + ".jpg"), w, h)
        savemat(
            os.path.join(root, "annotations", frame + ".jpg.mat"),
            {keys.get(frame, "box_new"): np.asarray(rows, dtype=np.float64).reshape(-1, 5)},
        )
    savemat(
        os.path.join(root, "frame_train.mat"),
        {"img_index_train": cell_column([np.array([f]) for f in train_frames])},
    )
    savemat(
        os.path.join(root, "frame_test.mat"),
        {"img_index_test": cell_column([np.array([f]) for f in test_frames])},
    )
    savemat(
        os.path.join(root, "ID_train.mat"), {"ID_train": np.asarray([train_ids], dtype=np.float64)}
    )
    with open(os.path.join(root, "query_info.txt"), "w", newline="") as f:
        f.write("".join(line + newline for line in query_lines))


def summary(dicts: list[dict]) -> dict:
    """What a reader returned, for comparison with hand-worked values: {image_id: [(bbox,
    person_id), ...]} in annotation order."""
    return {d["image_id"]: [(a["bbox"], a["person_id"]) for a in d["annotations"]] for d in dicts}
