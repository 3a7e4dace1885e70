"""Shared by the fa.save / fa.load tests (test_io.py, and the child processes of
test_io_crash.py and test_io_campaign.py): exact comparisons, and checkpoint files,
valid and hostile (each builder returns bytes)."""
import io
import struct
import warnings
import zipfile

import numpy as np

import fastad as fa


def assert_identical(loaded, original):
    """Same dtype (byte order included), shape and bytes (NaN, -0.0 and all)."""
    assert loaded.dtype == original.dtype
    assert loaded.shape == original.shape
    assert np.ascontiguousarray(loaded).tobytes() == np.ascontiguousarray(original).tobytes()


def assert_same(loaded, original):
    """`loaded` is what load should give back for `original`: Tensors as their arrays,
    tuples as lists, key types kept, floats bit for bit."""
    if isinstance(original, fa.Tensor):
        original = original.value
    if isinstance(original, (np.ndarray, np.generic)):
        kind = np.ndarray if isinstance(original, np.ndarray) else type(original)
        assert type(loaded) is kind
        assert_identical(np.asarray(loaded), np.asarray(original))
    elif isinstance(original, dict):
        assert type(loaded) is dict
        assert [(type(k), k) for k in loaded] == [(type(k), k) for k in original]
        for key, value in original.items():
            assert_same(loaded[key], value)
    elif isinstance(original, (list, tuple)):
        assert type(loaded) is list and len(loaded) == len(original)
        for item, value in zip(loaded, original):
            assert_same(item, value)
    elif isinstance(original, float):
        assert type(loaded) is float
        assert struct.pack(">d", loaded) == struct.pack(">d", original)
    else:
        assert type(loaded) is type(original) and loaded == original


def npy(descr, shape, fortran_order=False, data=b"", version=(1, 0)):
    """A .npy file whose header says whatever we like, followed by `data`."""
    header = repr({"descr": descr, "fortran_order": fortran_order, "shape": shape})
    header = header.encode("latin1")
    length_bytes = 2 if version == (1, 0) else 4
    padding = -(len(header) + 1 + 8 + length_bytes) % 64
    header += b" " * padding + b"\n"
    return (b"\x93NUMPY" + bytes(version) + len(header).to_bytes(length_bytes, "little")
            + header + data)


def npy_of(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def zip_of(members, compression=zipfile.ZIP_STORED):
    """A zip archive of {name: bytes} (a list of pairs allows duplicate names)."""
    buffer = io.BytesIO()
    pairs = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(buffer, "w", compression) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")     # zipfile warns about duplicate names
        for name, data in pairs:
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb(nbytes):
    """One deflated .npy member of `nbytes` of zeros (float64): a few KB per 10 MB."""
    buffer = io.BytesIO()
    count = nbytes // 8
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("w.npy", "w", force_zip64=True) as member:
            member.write(npy("<f8", (count,)))
            zeros = bytes(1 << 20)
            for start in range(0, count * 8, len(zeros)):
                member.write(zeros[:count * 8 - start])
    return buffer.getvalue()


def stored_member_lying_about_its_size(nbytes):
    """A stored .npy member whose header and central directory both claim `nbytes` of
    float64 data, of which the file holds 16."""
    data = bytearray(zip_of({"w.npy": npy("<f8", (nbytes // 8,), data=bytes(16))}))
    central = data.index(b"PK\x01\x02")
    claimed = (len(npy("<f8", (nbytes // 8,))) + nbytes).to_bytes(4, "little")
    data[central + 20:central + 28] = claimed + claimed    # compressed, uncompressed size
    return bytes(data)


def with_name_replaced(data, old, new):
    """Raw zip bytes with a member name changed everywhere it is written (zipfile
    itself refuses to write a name holding NUL)."""
    assert len(old) == len(new)
    return data.replace(old.encode(), new.encode())


def hostile_files(bomb_bytes=80 << 20):
    """{description: bytes} of files that fa.load must reject with ValueError."""
    f8 = npy_of(np.arange(3.0))
    files = {
        "huge shape (2**40 float64) in a tiny file": zip_of({"w.npy": npy("<f8", (2**40,))}),
        "huge 2-d shape": zip_of({"w.npy": npy("<f8", (2**40, 2**40))}),
        "negative dimension": zip_of({"w.npy": npy("<f8", (-1, 0))}),
        "negative dimensions whose product matches": zip_of(
            {"w.npy": npy("<f8", (-1, -3), data=bytes(24))}),
        "header size larger than the data": zip_of({"w.npy": npy("<f8", (4,), data=bytes(24))}),
        "header size smaller than the data": zip_of(
            {"w.npy": npy("<f8", (2,), data=bytes(24))}),
        "object dtype": zip_of({"w.npy": npy("|O", (1,), data=bytes(8))}),
        "structured dtype": zip_of({"w.npy": npy([("a", "<f8")], (3,), data=bytes(24))}),
        "subarray dtype": zip_of({"w.npy": npy(("<f8", (3,)), (1,), data=bytes(24))}),
        "unsized dtype": zip_of({"w.npy": npy("|V0", (2**40,))}),
        "string dtype by name": zip_of({"w.npy": npy("StringDType()", (1,), data=bytes(16))}),
        "garbage descr": zip_of({"w.npy": npy("not a dtype", (1,), data=bytes(8))}),
        "header that is not a dict": zip_of({"w.npy": b"\x93NUMPY\x01\x00\x06\x00[1, 2]"}),
        "header of 60 kB": zip_of({"w.npy": b"\x93NUMPY\x01\x00\x60\xea" + b" " * 60000}),
        ".npy version 3.0": zip_of({"w.npy": npy("<f8", (3,), data=bytes(24), version=(3, 0))}),
        ".npy version 9.9": zip_of({"w.npy": npy("<f8", (3,), data=bytes(24), version=(9, 9))}),
        "member that is not a .npy array": zip_of({"w.npy": f8, "notes.txt": b"hello"}),
        "member named .npy holding text": zip_of({"w.npy": b"just some text"}),
        "directory member": zip_of({"dir/": b"", "w.npy": f8}),
        "duplicate member names": zip_of([("w.npy", f8), ("w.npy", f8)]),
        "names np.load cannot tell apart": zip_of({"a.npy": f8, "a.npy.npy": f8}),
        "member name holding NUL": with_name_replaced(zip_of({"aXb.npy": f8}), "aXb", "a\0b"),
        "bzip2 member": zip_of({"w.npy": f8}, zipfile.ZIP_BZIP2),
        "zip bomb past the default cap": zip_bomb(bomb_bytes),
        "stored member claiming 60 MB": stored_member_lying_about_its_size(60 << 20),
        "empty file": b"",
        "text": b"these are not arrays\n",
        "single .npy file": f8,
        "pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",
        "zip header only": b"PK\x03\x04" + bytes(26),
    }
    for name, structure in {
        "structure that is not JSON": b"{not json",
        "structure with NaN": b"NaN",
        "structure that is not UTF-8": b'"\xff"',
        "structure nested 100000 deep": b"[" * 100000 + b"]" * 100000,
        "structure nested 150 deep": b"[" * 150 + b"]" * 150,
        "structure referring to a missing member": b'{"array": "missing.npy"}',
        "structure referring to a member twice": b'[{"array": "w.npy"}, {"array": "w.npy"}]',
        "structure leaving a member out": b'{"dict": []}',
        "structure with an unknown tag": b'{"pickle": "w.npy"}',
        "structure with two tags in one object": b'{"array": "w.npy", "int": "0x1"}',
        "structure with a bool dict key": b'{"dict": [[true, {"array": "w.npy"}]]}',
        "structure with a float dict key": b'{"dict": [[1.5, {"array": "w.npy"}]]}',
        "structure with a NUL dict key": b'{"dict": [["a\\u0000", {"array": "w.npy"}]]}',
        "structure with a duplicate dict key":
            b'{"dict": [["a", 1], ["a", {"array": "w.npy"}]]}',
        "structure with a dict that is not pairs": b'{"dict": [["a"]]}',
        "structure with a dict that is a string": b'{"dict": "w.npy"}',
        "structure with a bad float": b'[{"float": "xyz"}, {"array": "w.npy"}]',
        "structure with a bad int": b'[{"int": "0xg"}, {"array": "w.npy"}]',
        "structure with a non-string reference": b'{"array": ["w.npy"]}',
        "structure with a scalar of shape (3,)": b'{"scalar": "w.npy"}',
    }.items():
        files[name] = zip_of({"__fastad__.json": structure, "w.npy": f8})
    return files


def numbered_checkpoint(k, n):
    """Checkpoint number `k` (about 10*n bytes), every value telling its number: after a
    crash, a loaded file must equal numbered_checkpoint(loaded["epoch"], n) exactly."""
    return {"model": {"0.weight": np.full(n, k, np.float64), "0.bias": np.arange(1000.0) + k},
            "optim": {"state": {0: {"step": k, "exp_avg": np.full(n // 4, -k, np.float32)}},
                      "param_groups": [{"lr": 1e-3, "params": [0]}]},
            "epoch": k}
