"""MATLAB ``.mat`` writing of the synthetic datasets, byte-identical from run to run.

:func:`_write_mat` writes variables with ``scipy.io.savemat`` (compressed, MATLAB v7 style) under
a fixed header text (scipy writes the creation time there, which would break byte-identical
reruns); :func:`_struct_array`, :func:`_dbl` and :func:`_char_cell` build the values.
:func:`_write_testg` writes the CUHK-SYSU ``TestG{N}.mat`` protocol files by a small streaming
MAT-5 encoder of ours whose output is byte-identical to ``scipy.io.savemat`` (a test checks
this): at full scale ``TestG4000.mat`` holds 2,900 x 4,000 gallery entries, which savemat writes
at about 40 microseconds per entry (about 14 minutes for all six files; ours: about 30 s).
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.io

_MAT_HEADER_TEXT = (
    b"MATLAB 5.0 MAT-file, Platform: posix, Created by: dcinet_d2 synthetic generator"
)


def _mat_bytes(variables: dict[str, Any]) -> bytes:
    """``scipy.io.savemat`` (compressed) into memory, with a fixed header text.

    scipy writes the creation time into the 116-byte header text; we overwrite it so that reruns
    are byte-identical. The rest of the 128-byte header (version, endianness) is kept.
    """
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER_TEXT.ljust(116, b" ")
    return bytes(data)


def _write_mat(path: str, variables: dict[str, Any]) -> None:
    with open(path, "wb") as f:
        f.write(_mat_bytes(variables))


def _struct_array(shape: tuple[int, int], fields: Sequence[str]) -> np.ndarray:
    return np.empty(shape, dtype=[(f, object) for f in fields])


def _dbl(*values: float) -> np.ndarray:
    return np.asarray([values], dtype=np.float64)


def _char_cell(strings: Sequence[str]) -> np.ndarray:
    """A (len(strings), 1) cell of char, one string a row."""
    cell = np.empty((len(strings), 1), dtype=object)
    for t, s in enumerate(strings):
        cell[t, 0] = s
    return cell


# --- a minimal MAT-5 encoder for the (huge) TestG files, byte-identical to scipy.io.savemat ---
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_DOUBLE, _MI_MATRIX, _MI_COMPRESSED, _MI_UTF8 = (
    1,
    5,
    6,
    9,
    14,
    15,
    16,
)
_MX_STRUCT, _MX_CHAR, _MX_DOUBLE = 2, 4, 6


def _mat_element(mdtype: int, data: bytes) -> bytes:
    n = len(data)
    if n <= 4:  # "small data element": tag and data in 8 bytes
        return struct.pack("<I", (n << 16) | mdtype) + data.ljust(4, b"\0")
    return struct.pack("<II", mdtype, n) + data + b"\0" * ((-n) % 8)


def _mat_matrix(mclass: int, dims: tuple[int, int], payload: bytes, name: bytes = b"") -> bytes:
    content = (
        struct.pack("<IIII", _MI_UINT32, 8, mclass, 0)
        + _mat_element(_MI_INT32, struct.pack("<ii", *dims))
        + _mat_element(_MI_INT8, name)
        + payload
    )
    return struct.pack("<II", _MI_MATRIX, len(content)) + content


def _mat_char(s: str) -> bytes:
    return _mat_matrix(_MX_CHAR, (1, len(s)), _mat_element(_MI_UTF8, s.encode("ascii")))


def _mat_double(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype="<f8")
    assert a.ndim == 2
    return _mat_matrix(_MX_DOUBLE, a.shape, _mat_element(_MI_DOUBLE, a.tobytes(order="F")))


def _mat_struct_head(fields: Sequence[str]) -> bytes:
    length = max(len(f) for f in fields) + 1
    names = b"".join(f.encode("ascii").ljust(length, b"\0") for f in fields)
    return _mat_element(_MI_INT32, struct.pack("<i", length)) + _mat_element(_MI_INT8, names)


def _mat_struct_size(fields: Sequence[str], element_bytes: int, name: bytes = b"") -> int:
    """Size in bytes of a struct matrix whose elements take ``element_bytes`` bytes in all."""
    name_len = len(_mat_element(_MI_INT8, name))
    return 8 + 16 + 16 + name_len + len(_mat_struct_head(fields)) + element_bytes


_QUERY_FIELDS = ("imname", "idlocate", "ishard", "idname")
_GALLERY_FIELDS = ("imname", "idlocate", "ishard")
#: Ours: an empty idlocate is 1x0 (see the :mod:`.cuhk_sysu` docstring).
_EMPTY_IDLOCATE_SHAPE = (1, 0)


@dataclass
class _QueryProtocol:
    query: tuple[str, tuple[int, int, int, int], int, str]  # imname, idlocate, ishard, idname
    targets: list[tuple[str, tuple[int, int, int, int], int]]  # imname, idlocate, ishard
    distractors: np.ndarray  # indices into ``names``, in gallery order (prefix per gallery size)
    names: Sequence[str]  # all image names (shared by every query)


def _testg_entries(q: _QueryProtocol, n: int) -> list[tuple[str, tuple[int, ...] | None, int]]:
    entries: list[tuple[str, tuple[int, ...] | None, int]] = [
        (name, box, hard) for name, box, hard in q.targets
    ]
    entries += [(q.names[j], None, 0) for j in q.distractors[: n - len(q.targets)].tolist()]
    return entries


def _testg_struct(protocol: Sequence[_QueryProtocol], n: int) -> np.ndarray:
    """The TestG{n} variable as a numpy struct array (what ``scipy.io.savemat`` would write)."""
    out = _struct_array((1, len(protocol)), ("Query", "Gallery"))
    for i, q in enumerate(protocol):
        qs = _struct_array((1, 1), _QUERY_FIELDS)
        qs[0, 0] = (q.query[0], _dbl(*q.query[1]), _dbl(q.query[2]), q.query[3])
        entries = _testg_entries(q, n)
        g = _struct_array((1, len(entries)), _GALLERY_FIELDS)
        for j, (name, box, hard) in enumerate(entries):
            loc = _dbl(*box) if box is not None else np.zeros(_EMPTY_IDLOCATE_SHAPE)
            g[0, j] = (name, loc, _dbl(hard))
        out[0, i] = (qs, g)
    return out


def _write_testg(path: str, protocol: Sequence[_QueryProtocol], n: int) -> None:
    """Write ``TestG{n}.mat`` by streaming; the bytes equal ``_mat_bytes({key: _testg_struct})``.

    The encoder follows the MAT-5 layout that ``scipy.io.savemat`` produces for a struct array of
    structs of char/double matrices (column-major elements, empty names below the top level,
    zlib-compressed top-level variable). Gallery entries are cached per (image, box, hard) so that
    the distractor entries, which repeat across queries, are encoded once.
    """
    key = f"TestG{n}"
    if sys.byteorder != "little":  # the encoder writes little-endian only; scipy is exact anyway
        _write_mat(path, {key: _testg_struct(protocol, n)})
        return
    cache: dict[tuple[str, tuple[int, ...] | None, int], bytes] = {}
    empty = _mat_double(np.zeros(_EMPTY_IDLOCATE_SHAPE))

    def gallery_entry(e: tuple[str, tuple[int, ...] | None, int]) -> bytes:
        b = cache.get(e)
        if b is None:
            loc = _mat_double(_dbl(*e[1])) if e[1] is not None else empty
            b = _mat_char(e[0]) + loc + _mat_double(_dbl(e[2]))
            cache[e] = b
        return b

    def query_bytes(q: _QueryProtocol) -> bytes:
        name, box, hard, idname = q.query
        el = _mat_char(name) + _mat_double(_dbl(*box)) + _mat_double(_dbl(hard)) + _mat_char(idname)
        return _mat_matrix(_MX_STRUCT, (1, 1), _mat_struct_head(_QUERY_FIELDS) + el)

    def gallery_bytes(q: _QueryProtocol) -> bytes:
        entries = _testg_entries(q, n)
        body = b"".join(gallery_entry(e) for e in entries)
        return _mat_matrix(_MX_STRUCT, (1, len(entries)), _mat_struct_head(_GALLERY_FIELDS) + body)

    # pass 1: sizes (needed in the tags before the data)
    total = 0
    for q in protocol:
        qb = len(query_bytes(q))
        entries_len = sum(len(gallery_entry(e)) for e in _testg_entries(q, n))
        gb = _mat_struct_size(_GALLERY_FIELDS, entries_len)
        total += qb + gb
    name = key.encode("latin1")
    top_content = _mat_struct_size(("Query", "Gallery"), total, name) - 8
    if top_content >= 2**32:
        raise ValueError(
            f"{path}: TestG{n} is too large for the MAT-5 format ({top_content} bytes)"
        )
    top_head = (
        struct.pack("<II", _MI_MATRIX, top_content)
        + struct.pack("<IIII", _MI_UINT32, 8, _MX_STRUCT, 0)
        + _mat_element(_MI_INT32, struct.pack("<ii", 1, len(protocol)))
        + _mat_element(_MI_INT8, name)
        + _mat_struct_head(("Query", "Gallery"))
    )
    header = bytearray(_mat_bytes({}))  # 128-byte file header only
    assert len(header) == 128
    comp = zlib.compressobj()
    with open(path, "wb") as f:
        f.write(bytes(header))
        f.write(b"\0" * 8)  # miCOMPRESSED tag, patched below
        size = 0
        chunk = comp.compress(top_head)
        f.write(chunk)
        size += len(chunk)
        for q in protocol:
            chunk = comp.compress(query_bytes(q) + gallery_bytes(q))
            f.write(chunk)
            size += len(chunk)
        chunk = comp.flush()
        f.write(chunk)
        size += len(chunk)
        f.seek(128)
        f.write(struct.pack("<II", _MI_COMPRESSED, size))
