"""Checkpoints as .npz archives: named arrays, no pickle.

A file holds one `.npy` member per array, written with pickling disallowed, and is read
back with `np.load(..., allow_pickle=False)`: loading an untrusted file runs no code.
"""
import zipfile
import zlib

import numpy as np

from ._tensor import Tensor

__all__ = ["save", "load"]


def save(path, obj):
    """Write a dict {str: array or Tensor} (e.g. a state_dict) or a list of arrays/Tensors
    (saved under the keys '0', '1', ...) to `path` as an .npz archive.

    `path` (a str, a path-like or a binary file) is used exactly as given: no '.npz' is
    appended. Dtypes and shapes are preserved exactly.
    """
    items = _items(obj)  # check everything before touching the file
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in items:
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _items(obj):
    """[(key, ndarray)] for a dict or a list, all checked before anything is written."""
    if isinstance(obj, dict):
        pairs = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        pairs = [(str(i), v) for i, v in enumerate(obj)]
    else:
        raise TypeError(f"save: expects a dict of arrays or a list of arrays, got "
                        f"{type(obj).__name__}")
    items = []
    for key, value in pairs:
        if not isinstance(key, str):
            raise TypeError(f"save: keys must be strings, got {key!r} "
                            f"({type(key).__name__})")
        array = value.value if isinstance(value, Tensor) else value
        if not isinstance(array, np.ndarray):
            raise TypeError(f"save: {key!r} must be an ndarray or a Tensor, got "
                            f"{type(value).__name__}")
        if array.dtype.hasobject:
            raise TypeError(f"save: {key!r} has dtype object, which only pickle could store")
        items.append((key, array))
    return items


# What np.load raises for a damaged archive or an array of Python objects.
_DAMAGED = (ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load(path):
    """Read an .npz archive written by `save` (or `np.savez`) as a dict {str: ndarray}.

    `path` is a str, a path-like or a binary file. A file that is not an .npz archive of
    plain arrays (a text file, a pickle, a single .npy array, a damaged archive, an
    array of Python objects) raises ValueError; nothing in it is ever unpickled.
    """
    own = not hasattr(path, "read")
    file = open(path, "rb") if own else path
    try:
        name = getattr(file, "name", path)
        start = file.tell()
        magic = file.read(6)
        file.seek(start)
        if magic.startswith(b"\x93NUMPY"):
            raise ValueError(f"load: {name!r} holds a single .npy array, not an .npz "
                             "archive of named arrays")
        if not magic.startswith(b"PK"):
            raise ValueError(f"load: {name!r} is not an .npz archive (a zip file of .npy "
                             f"arrays); it starts with {magic!r}")
        try:
            with np.load(file, allow_pickle=False) as contents:
                return {key: contents[key] for key in contents.files}
        except _DAMAGED as e:
            raise ValueError(f"load: {name!r} is not a valid .npz archive of arrays: "
                             f"{e}") from e
    finally:
        if own:
            file.close()
