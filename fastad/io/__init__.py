"""Checkpoints as .npz archives: arrays in `.npy` members, the structure around them in
JSON, no pickle anywhere.

A file is a zip archive with one `.npy` member per array (written with pickling
disallowed) and a member named STRUCTURE: the nested dicts and lists as JSON, scalars
inline, each array replaced by the name of its member. `load` checks everything a
hostile file could lie about (names, dtypes, sizes) before it allocates or runs anything.
"""
import contextlib
import errno
import json
import math
import os
import secrets
import stat
import struct
import zipfile
import zlib

import numpy as np

from ..core.tensor import Tensor

__all__ = ["save", "load"]

STRUCTURE = "__fastad__.json"   # the member holding the structure
_ROOT = "arr_0"                 # the member name of an array saved on its own (np.savez's)
_MAX_DEPTH = 100                # levels of nesting, for save and load alike
_EXACT_INT = 2 ** 53            # ints this large are stored as hex: JSON readers lose them
_MAX_HEADER = 10000             # bytes of .npy header, as np.load's default
_CHUNK = 1 << 24                # bytes read from a member at a time


# --- save ------------------------------------------------------------------------------

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
        if len(path) > _MAX_DEPTH:
            raise ValueError(f"save: obj is nested more than {_MAX_DEPTH} levels deep "
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
        problem = _dtype_problem(array.dtype)
        if problem:
            raise TypeError(f"save: {_where(path)} {problem}")
        name = ("/".join(map(str, path)) if path else _ROOT) + ".npy"
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
    collision = _collision([STRUCTURE, *arrays])
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


# --- checks shared by save and load ------------------------------------------------------

def _dtype_problem(dtype):
    """Why arrays of `dtype` cannot be stored in .npy without pickle, or None."""
    if dtype.names is not None or dtype.subdtype is not None:
        return f"has a structured dtype {dtype}, which fa.save does not store"
    if dtype.kind == "O":
        return "has dtype object (Python objects), which only pickle could store"
    if dtype.kind not in "biufcmMSUV" or dtype.itemsize == 0:
        return f"has dtype {dtype}, which .npy cannot store without pickle"
    return None


def _collision(names):
    """Two member names np.load cannot tell apart, or None: the same name twice, or
    'a.npy' beside 'a.npy.npy' (np.load finds both under the key 'a.npy')."""
    seen = set()
    for name in names:
        if name in seen:
            return name, name
        seen.add(name)
    for name in names:
        if name.endswith(".npy") and name[:-4] in seen:
            return name, name[:-4]
    return None


# --- load ------------------------------------------------------------------------------

class _BadFile(ValueError):
    """A problem with the file being loaded (load adds the op and the file's name)."""


# What zipfile, zlib, numpy's header parser and json raise for damaged input.
_DAMAGED = (_BadFile, ValueError, TypeError, OverflowError, EOFError, OSError,
            zipfile.BadZipFile, zlib.error, struct.error, NotImplementedError, RuntimeError)


def load(path, max_bytes=None):
    """Read a file written by `save` (or `np.savez`): the saved structure, with arrays as
    ndarrays of the saved dtype (byte order included) and shape. Tuples come back as
    lists, NumPy scalars as NumPy scalars; an `np.savez` file as a dict {name: array}.

    Safe on untrusted files: nothing is unpickled or evaluated. Anything other than such
    an archive of plain arrays (a directory, FIFO or device; a damaged or truncated zip;
    a member that is not a .npy array, or of object or structured dtype; names that
    collide or hold NUL; a header whose size disagrees with its member; a malformed
    structure) raises ValueError before any large allocation. The members may expand to
    at most `max_bytes` in total (default: 4x the file's size plus 64 MiB).

    `path` is a str, a path-like or a binary file object.
    """
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
        raise ValueError(f"load: max_bytes must be None or an int >= 0, got {max_bytes!r}")
    if hasattr(path, "read"):
        return _load_file(path, getattr(path, "name", "<file object>"), max_bytes)
    with _open_regular(path) as file:
        return _load_file(file, os.fspath(path), max_bytes)


def _open_regular(path):
    """`path` opened for reading, ValueError if it is not a regular file (a FIFO would
    block, a device could be endless)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"load: {os.fspath(path)!r} is not a regular file (a directory, "
                         "FIFO or device?)")
    # O_NONBLOCK: should a FIFO replace the file after the check, opening it won't hang
    return open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")


def _load_file(file, name, max_bytes):
    try:
        return _read_checkpoint(file, max_bytes)
    except _DAMAGED as e:
        problem = e if isinstance(e, _BadFile) else (
            f"damaged archive ({type(e).__name__}: {e})")
        raise ValueError(f"load: {name!r}: {problem}") from e


def _read_checkpoint(file, max_bytes):
    start, end = file.tell(), file.seek(0, os.SEEK_END)
    file.seek(start)
    magic = file.read(6)
    file.seek(start)
    if magic.startswith(b"\x93NUMPY"):
        raise _BadFile("holds a single .npy array, not an .npz archive of named arrays")
    if not magic.startswith(b"PK"):
        raise _BadFile(f"is not an .npz archive (a zip file of .npy arrays); it starts "
                       f"with {magic!r}")
    cap = 4 * (end - start) + (64 << 20) if max_bytes is None else max_bytes
    with zipfile.ZipFile(file) as archive:
        members = {info.filename: info for info in _checked_members(archive, cap, end)}
        if STRUCTURE not in members:    # an np.savez file
            return {name[:-4]: _read_array(archive, info) for name, info in members.items()}
        structure = _read_structure(archive, members.pop(STRUCTURE))
        obj = _decode(structure, lambda name: _read_array(archive, _take(members, name)))
        if members:
            raise _BadFile(f"members {sorted(members)} are not part of the structure")
        return obj


def _checked_members(archive, cap, end):
    """The archive's members, after checking their names, compression and sizes (`end`:
    where the file ends)."""
    infos = archive.infolist()
    for info in infos:
        if "\0" in info.orig_filename:
            raise _BadFile(f"member name {info.orig_filename!r} holds a NUL character")
        if info.filename != STRUCTURE and not info.filename.endswith(".npy"):
            raise _BadFile(f"member {info.filename!r} is not a .npy array")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _BadFile(f"member {info.filename!r} uses compression method "
                           f"{info.compress_type}; only stored and deflated are read")
        if info.flag_bits & 1:
            raise _BadFile(f"member {info.filename!r} is encrypted")
        stored = info.compress_type == zipfile.ZIP_STORED
        if info.header_offset + info.compress_size > end or (
                stored and info.file_size != info.compress_size):
            raise _BadFile(f"member {info.filename!r} claims {info.file_size} bytes that "
                           "the file does not hold")
    collision = _collision([info.filename for info in infos])
    if collision:
        raise _BadFile(f"member names {collision[0]!r} and {collision[1]!r} collide")
    total = sum(info.file_size for info in infos)
    if total > cap:
        raise _BadFile(f"members would expand to {total} bytes, past the cap of {cap} "
                       "(load's max_bytes)")
    return infos


def _take(members, name):
    """The member an array reference names, each at most once."""
    if not isinstance(name, str) or name not in members:
        raise _BadFile(f"the structure refers to {name!r}, which is not an array member "
                       "(missing, or referred to twice)")
    return members.pop(name)


def _read_array(archive, info):
    """A member's array, allocated only once its header agrees with the member's size."""
    def bad(problem):
        return _BadFile(f"member {info.filename!r} {problem}")

    with archive.open(info) as member:
        shape, fortran_order, dtype = _read_header(member, bad)
        problem = _dtype_problem(dtype)
        if problem:
            raise bad(problem)
        if any(n < 0 for n in shape):
            raise bad(f"declares a negative shape {shape}")
        declared = math.prod(shape) * dtype.itemsize
        held = info.file_size - member.tell()
        if declared != held:
            raise bad(f"declares shape {shape} of {dtype} ({declared} bytes) but holds "
                      f"{held} bytes of data")
        array = np.empty(shape[::-1] if fortran_order else shape, dtype)
        _read_exactly(member, memoryview(array.reshape(-1).view(np.uint8)), bad)
        return array.T if fortran_order else array


def _read_header(member, bad):
    """(shape, fortran_order, dtype) from a .npy header of version 1.0 or 2.0."""
    try:
        version = np.lib.format.read_magic(member)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"version {version} is not 1.0 or 2.0")
        return read(member, max_header_size=_MAX_HEADER)
    except ValueError as e:
        raise bad(f"has no valid .npy header ({e})") from None


def _read_exactly(member, buffer, bad):
    """Fill `buffer` from `member` (which then checks its CRC)."""
    for start in range(0, len(buffer), _CHUNK):
        chunk = buffer[start:start + _CHUNK]
        while len(chunk):
            count = member.readinto(chunk)
            if not count:
                raise bad("ends before its data does")
            chunk = chunk[count:]


def _read_structure(archive, info):
    text = archive.read(info)
    try:
        return json.loads(text.decode(), object_pairs_hook=_Object,
                          parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
        raise _BadFile(f"has a malformed structure member ({e})") from None


class _Object(tuple):
    """A JSON object as its (key, value) pairs, so that its keys can be checked."""


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _decode(node, read_array, depth=0):
    """The value a JSON node of the structure stands for (see _encode)."""
    if depth > _MAX_DEPTH:
        raise _BadFile(f"the structure is nested more than {_MAX_DEPTH} levels deep")
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list):
        return [_decode(item, read_array, depth + 1) for item in node]
    if len(node) != 1:
        raise _BadFile(f"the structure holds an object with keys {[k for k, _ in node]}, "
                       "not one tag")
    tag, payload = node[0]
    if tag == "dict":
        return _decode_dict(payload, read_array, depth)
    if tag == "array":
        return read_array(payload)
    if tag == "scalar":
        array = read_array(payload)
        if array.ndim:
            raise _BadFile(f"scalar member {payload!r} has shape {array.shape}")
        return array[()]
    if tag in ("int", "float") and isinstance(payload, str):
        try:
            if tag == "int":
                return int(payload, 16)
            return struct.unpack(">d", bytes.fromhex(payload))[0]
        except (ValueError, struct.error):
            pass
    raise _BadFile(f"the structure holds an unknown value {{{tag!r}: {payload!r:.80}}}")


def _decode_dict(pairs, read_array, depth):
    if not isinstance(pairs, list):
        raise _BadFile("the structure holds a dict that is not a list of pairs")
    result = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _BadFile(f"the structure holds a dict item {pair!r:.80}, not a pair")
        key, value = pair
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise _BadFile(f"the structure holds a dict key {key!r:.80}, not a str or int")
        if isinstance(key, str) and "\0" in key:
            raise _BadFile(f"the structure holds a dict key {key!r:.80} with a NUL "
                           "character")
        if key in result:
            raise _BadFile(f"the structure holds the dict key {key!r:.80} twice")
        result[key] = _decode(value, read_array, depth + 1)
    return result
