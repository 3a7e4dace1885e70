"""fa.load: read an archive that may be hostile, checking names, dtypes and sizes before
allocating, and decode its structure."""
import json
import math
import os
import stat
import struct
import zipfile
import zlib

import numpy as np

from .archive import MAX_DEPTH, STRUCTURE, dtype_problem, name_collision

_MAX_HEADER = 10000             # bytes of .npy header, as np.load's default
_CHUNK = 1 << 24                # bytes read from a member at a time


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
    collision = name_collision([info.filename for info in infos])
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
        problem = dtype_problem(dtype)
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
    if depth > MAX_DEPTH:
        raise _BadFile(f"the structure is nested more than {MAX_DEPTH} levels deep")
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
