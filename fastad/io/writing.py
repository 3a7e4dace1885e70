"""fa.save: encode a structure of arrays and plain values (checking every key and value
first), then write the archive, atomically when given a path."""
import contextlib
import errno
import json
import math
import os
import secrets
import struct
import zipfile

import numpy as np

from ..core.tensor import Tensor
from .archive import MAX_DEPTH, ROOT, STRUCTURE, dtype_problem, name_collision

_EXACT_INT = 2 ** 53            # ints this large are stored as hex: JSON readers lose them


def save(path, obj):
    """Write `obj` to `path` as an .npz archive, atomically.

    `obj` is an ndarray, a Tensor (saved as its `.value`), a NumPy scalar, or dicts
    (str or int keys), lists and tuples nesting them with str, int, float, bool and None.
    Every key and value is checked before anything is written: TypeError or ValueError
    naming the offending key, and `path` is untouched.

    `path` (a str or path-like) is used exactly as given, no '.npz' appended. The file
    is written as `.<name>.<random>.tmp` in the same directory, flushed and fsynced,
    then renamed onto `path` (and the directory fsynced): a failure at any moment,
    kill -9 included, leaves the previous file at `path` intact (a kill can leave the
    temporary file behind). A binary file object is written in place, not atomically.
    """
    structure, arrays = _encode(obj)
    if hasattr(path, "write"):
        _write_archive(path, structure, arrays)
    else:
        _write_atomically(os.fspath(path),
                          lambda file: _write_archive(file, structure, arrays))


def _encode(obj):
    """(JSON text of `obj` with arrays as member names, {member name: array}).

    Raises TypeError/ValueError naming the key for anything `load` could not give back.
    """
    arrays, paths = {}, {}

    def encode(value, path):
        if len(path) > MAX_DEPTH:
            raise ValueError(f"save: obj is nested more than {MAX_DEPTH} levels deep "
                             "(does it contain itself?)")
        if isinstance(value, Tensor):
            value = value.value
        if isinstance(value, (np.ndarray, np.generic)):
            tag = "array" if isinstance(value, np.ndarray) else "scalar"
            return {tag: add_array(np.asarray(value), path)}
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value) if abs(value) < _EXACT_INT else {"int": hex(value)}
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {"float": _float_bits(value)}
        if isinstance(value, (list, tuple)):
            return [encode(item, path + (i,)) for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {"dict": [[_checked_key(key, path), encode(item, path + (key,))]
                             for key, item in value.items()]}
        raise TypeError(f"save: {_where(path)} is of type {type(value).__name__}; fa.save "
                        "stores arrays, Tensors, NumPy scalars, dicts, lists, tuples, str, "
                        "int, float, bool and None")

    def add_array(array, path):
        problem = dtype_problem(array.dtype)
        if problem:
            raise TypeError(f"save: {_where(path)} {problem}")
        name = ("/".join(map(str, path)) if path else ROOT) + ".npy"
        if len(name.encode()) > 0xFFFF:
            raise ValueError(f"save: the member name of {_where(path)} is longer than a "
                             "zip file allows (65535 bytes)")
        if name in paths:
            collide(path, name, name)
        arrays[name], paths[name] = array, path
        return name

    def collide(path, name, other):
        clash = _where(paths[other]) if other in paths else "fa.save's own member"
        raise ValueError(f"save: {_where(path)} would be stored as {name!r}, which "
                         f"np.load cannot tell apart from {clash} ({other!r})")

    structure = encode(obj, ())
    collision = name_collision([STRUCTURE, *arrays])
    if collision:
        name, other = collision
        collide(paths[name], name, other)
    return json.dumps(structure, allow_nan=False), arrays


def _checked_key(key, path):
    """`key` if a dict key can be it: an int, or a str a zip member name can hold."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"save: keys must be str or int, got {key!r} "
                        f"({type(key).__name__}) in {_where(path)}")
    if isinstance(key, int):
        return int(key)
    try:
        key.encode()
    except UnicodeEncodeError:
        raise ValueError(f"save: key {key!r} in {_where(path)} cannot be encoded as "
                         "UTF-8, which zip member names are") from None
    if "\0" in key:
        raise ValueError(f"save: key {key!r} in {_where(path)} holds a NUL character")
    return key


def _where(path):
    """The expression that reaches a value inside `obj`: obj['optim']['state'][0]."""
    return "obj" + "".join(f"[{key!r}]" for key in path)


def _float_bits(value):
    """The IEEE bits of a float as 16 hex digits (NaN payloads and signs kept)."""
    return struct.pack(">d", value).hex()


def _write_archive(file, structure, arrays):
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr(STRUCTURE, structure)
        for name, array in arrays.items():
            with archive.open(name, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _write_atomically(path, write):
    """Call write(file) on a temporary file beside `path`, then rename it onto `path`."""
    directory, name = os.path.split(path)
    # name[:100]: the temporary name stays within the filesystem's name limit
    temp = os.path.join(directory, f".{name[:100]}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(directory or ".")


def _fsync_directory(directory):
    """Make a rename in `directory` durable (on systems that can fsync a directory)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:   # filesystems that cannot sync a directory
            raise
    finally:
        os.close(fd)
