"""fa.save / fa.load: exact round trips of nested checkpoints, every bad key or value
rejected before the file is touched, and a clear ValueError for any bad file, without
running any code. (Crashes while saving: test_io_crash.py; random damage to files:
test_io_campaign.py.)"""
import io
import os
import pathlib
import pickle
import stat
import struct
import tracemalloc

import numpy as np
import pytest

import fastad as fa
from _io_files import assert_identical, assert_same, hostile_files, zip_bomb


def round_trip(tmp_path, obj):
    fa.save(tmp_path / "ckpt.npz", obj)
    return fa.load(tmp_path / "ckpt.npz")


def assorted_arrays():
    rng = np.random.default_rng(0)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324, 1.0], np.float64)
    return {
        "0.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "0.bias": rng.standard_normal(4),
        "special": special,
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3)),
        "cube": rng.standard_normal((2, 3, 4)),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "strided": rng.standard_normal((6, 6))[::2, 1::3],
        "big_endian": np.arange(5, dtype=">f8"),
        "half": np.linspace(0, 1, 7, dtype=np.float16),
        "ints": np.arange(-3, 3, dtype=np.int8),
        "uints": np.arange(6, dtype=np.uint64) * (2 ** 60),
        "flags": np.array([True, False, True]),
        "complex": np.array([1 + 2j, -3j]),
        "dates": np.array(["2026-12-01", "NaT"], dtype="M8[s]"),
        "text": np.array(["ab", "ç"]),
        "name/with/slashes and spaces.npy": np.ones(2),
    }


def checkpoint():
    """A training checkpoint as the SPEC shows it, with PyTorch's optimizer layout."""
    rng = np.random.default_rng(0)
    model = fa.nn.Sequential(fa.nn.Linear(5, 8, rng=rng), fa.nn.ReLU(),
                             fa.nn.Linear(8, 3, rng=rng))
    rng.random(7)
    rng.integers(0, 10, size=3, dtype=np.uint32)     # leaves a cached uint32 in the state
    state = {i: {"step": 3, "exp_avg": rng.standard_normal(p.shape).astype(np.float32),
                 "exp_avg_sq": np.zeros(p.shape, np.float32)}
             for i, p in enumerate(model.parameters())}
    groups = [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
               "amsgrad": False, "foreach": None, "params": list(state)}]
    return {"model": model.state_dict(), "optim": {"state": state, "param_groups": groups},
            "epoch": 3, "loss": float("nan"), "name": "run-1", "rng": rng.bit_generator.state}


# --- round trips --------------------------------------------------------------------

def test_dict_round_trip_is_exact(tmp_path):
    arrays = assorted_arrays()
    assert_same(round_trip(tmp_path, arrays), arrays)


def test_flat_dict_stays_readable_by_np_load(tmp_path):
    arrays = assorted_arrays()
    fa.save(tmp_path / "ckpt.npz", arrays)
    with np.load(tmp_path / "ckpt.npz") as contents:
        for key, original in arrays.items():
            assert_identical(contents[key], original)


def test_nested_checkpoint_round_trip(tmp_path):
    saved = checkpoint()
    loaded = round_trip(tmp_path, saved)
    assert_same(loaded, saved)
    assert list(loaded["optim"]["state"]) == [0, 1, 2, 3]          # int keys stay ints
    assert loaded["optim"]["param_groups"][0]["betas"] == [0.9, 0.999]


def test_list_round_trip_is_a_list(tmp_path):
    arrays = list(assorted_arrays().values())
    assert_same(round_trip(tmp_path, arrays), arrays)
    nested_tuples = (arrays[0], (1, (2.5, None)))
    assert_same(round_trip(tmp_path, nested_tuples), [arrays[0], [1, [2.5, None]]])


def test_arrays_and_scalars_on_their_own(tmp_path):
    for obj in (np.arange(6.0).reshape(2, 3), np.array(2, np.int16), 3, -0.0, "x", None, True):
        assert_same(round_trip(tmp_path, obj), obj)


def test_tensors_are_saved_as_their_values(tmp_path):
    w = fa.Parameter(np.arange(6.0).reshape(2, 3), dtype=np.float32)
    obj = {"w": w, "more": [fa.tensor(np.ones(2))]}
    assert_same(round_trip(tmp_path, obj), obj)
    assert_same(round_trip(tmp_path, w), w)


def test_floats_are_bit_exact(tmp_path):
    def bits(hex16):
        return struct.unpack(">d", bytes.fromhex(hex16))[0]

    floats = [0.0, -0.0, 0.1, 1 / 3, -2.5, 5e-324, 1.7976931348623157e308, float("inf"),
              float("-inf"), float("nan"), -float("nan"), bits("7ff0000000000001"),
              bits("fff8dead0000beef"), 1e22, 3.0]
    assert_same(round_trip(tmp_path, floats), floats)


def test_ints_of_any_size_none_and_bools(tmp_path):
    values = [0, -1, 2**53 - 1, 2**53, -2**53, 2**64 + 1, -(2**127), 2**128 - 1,
              3**20000, True, False, None]                 # 3**20000: 9543 digits
    assert_same(round_trip(tmp_path, values), values)


def test_rng_state_resumes_the_generator_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    rng.random(10)
    rng.integers(0, 5, size=1, dtype=np.uint32)
    fa.save(tmp_path / "rng.npz", {"rng": rng.bit_generator.state})
    expected = (rng.random(5), rng.integers(0, 2**31, size=5, dtype=np.uint32))
    resumed = np.random.default_rng()
    resumed.bit_generator.state = fa.load(tmp_path / "rng.npz")["rng"]
    assert_same([resumed.random(5), resumed.integers(0, 2**31, size=5, dtype=np.uint32)],
                expected)


def test_numpy_scalars_come_back_as_numpy_scalars(tmp_path):
    scalars = {"f32": np.float32(1.5), "f64": np.float64(-0.0), "i64": np.int64(-3),
               "u8": np.uint8(200), "flag": np.bool_(True), "c": np.complex64(1j)}
    assert_same(round_trip(tmp_path, scalars), scalars)


def test_state_dict_checkpoint_round_trip(tmp_path):
    def model(seed):
        rng = np.random.default_rng(seed)
        return fa.nn.Sequential(fa.nn.Linear(5, 8, rng=rng), fa.nn.ReLU(),
                                fa.nn.Linear(8, 3, dtype=np.float32, rng=rng))

    trained, fresh = model(0), model(1)
    fa.save(tmp_path / "ckpt.npz", trained.state_dict())
    fresh.load_state_dict(fa.load(tmp_path / "ckpt.npz"))
    for key, value in trained.state_dict().items():
        assert_identical(fresh.state_dict()[key], value)


def test_nothing_passed_in_is_modified(tmp_path):
    obj = checkpoint()
    before = pickle.dumps(obj)
    fa.save(tmp_path / "ckpt.npz", obj)
    assert pickle.dumps(obj) == before


def test_path_is_used_as_given_and_no_temporary_file_remains(tmp_path):
    path = tmp_path / "model.ckpt"
    fa.save(path, {"a": np.ones(2)})
    fa.save(str(path), {"a": np.zeros(2)})         # replaces the file
    assert os.listdir(tmp_path) == ["model.ckpt"]
    assert_identical(fa.load(path)["a"], np.zeros(2))


def test_saved_file_has_the_usual_permissions(tmp_path):
    fa.save(tmp_path / "ckpt.npz", {"a": np.ones(2)})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "ckpt.npz").st_mode) == 0o666 & ~umask


def test_reads_numpy_savez_files(tmp_path):
    np.savez_compressed(tmp_path / "np.npz", a=np.arange(4), b=np.eye(2, dtype=np.float32))
    np.savez(tmp_path / "empty.npz")
    assert_same(fa.load(tmp_path / "np.npz"),
                {"a": np.arange(4), "b": np.eye(2, dtype=np.float32)})
    assert fa.load(tmp_path / "empty.npz") == {}


def test_binary_file_objects_work_too():
    buffer = io.BytesIO()
    fa.save(buffer, {"w": np.arange(3.0), "epoch": 2})
    buffer.seek(0)
    assert_same(fa.load(buffer), {"w": np.arange(3.0), "epoch": 2})


# --- bad objects: rejected before the file is touched -------------------------------------

contains_itself = [np.ones(2)]
contains_itself.append(contains_itself)

BAD_OBJECTS = {
    "float key": ({1.5: np.ones(2)}, TypeError,
                  r"keys must be str or int, got 1\.5 \(float\) in obj$"),
    "tuple key": ({"a": {(1, 2): 3}}, TypeError, r"got \(1, 2\) \(tuple\) in obj\['a'\]"),
    "bool key": ({True: 1}, TypeError, "keys must be str or int, got True"),
    "key not UTF-8": ({"w": np.ones(2), "bad\udc80": np.ones(2)}, ValueError,
                      r"key 'bad\\udc80' in obj cannot be encoded as UTF-8"),
    "key with NUL": ({"w": np.ones(2), "a\0b": np.ones(2)}, ValueError,
                     r"key 'a\\x00b' in obj holds a NUL"),
    "key colliding for np.load": ({"a": np.ones(2), "a.npy": np.ones(2)}, ValueError,
                                  r"obj\['a\.npy'\] would be stored as 'a\.npy\.npy', which "
                                  r"np\.load cannot tell apart from obj\['a'\]"),
    "nested path colliding": ({"a/b": np.ones(1), "a": {"b": np.ones(1)}}, ValueError,
                              r"obj\['a'\]\['b'\] would be stored as 'a/b\.npy'.*obj\['a/b'\]"),
    "int and str key colliding": ({0: np.ones(1), "0": np.ones(1)}, ValueError,
                                  r"obj\['0'\] would be stored as '0\.npy'"),
    "key colliding with the structure": ({"__fastad__.json": np.ones(1)}, ValueError,
                                         "fa.save's own member"),
    "object array": ({"w": np.ones(2), "o": np.array([None, 1])}, TypeError,
                     r"obj\['o'\] has dtype object"),
    "object array alone": (np.array([1, "a"], dtype=object), TypeError, "obj has dtype object"),
    "structured array": ({"w": np.zeros(2, [("a", "f8")])}, TypeError, "structured dtype"),
    "StringDType array": ({"w": np.array(["x"], dtype=np.dtypes.StringDType())}, TypeError,
                          r"obj\['w'\] has dtype StringDType.*without pickle"),
    "object deep inside": ({"model": {"w": np.ones(2)}, "optim": {"state": {0: object()}}},
                           TypeError, r"obj\['optim'\]\['state'\]\[0\] is of type object"),
    "bytes in a list": ([np.ones(2), b"bytes"], TypeError, r"obj\[1\] is of type bytes"),
    "set": ({"s": {1, 2}}, TypeError, r"obj\['s'\] is of type set"),
    "complex": ({"c": 1 + 2j}, TypeError, "is of type complex"),
    "object": (object(), TypeError, "obj is of type object;"),
    "structure containing itself": (contains_itself, ValueError, "nested more than 100 levels"),
}


@pytest.mark.parametrize("obj, error, pattern", BAD_OBJECTS.values(), ids=list(BAD_OBJECTS))
def test_bad_objects_are_rejected_before_the_file_is_touched(tmp_path, obj, error, pattern):
    path = tmp_path / "ckpt.npz"
    fa.save(path, checkpoint())
    before = path.read_bytes()
    with pytest.raises(error, match="^save: .*" + pattern):
        fa.save(path, obj)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_a_failure_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    fa.save(path, {"kept": np.arange(3)})
    before = path.read_bytes()
    write_array, calls = np.lib.format.write_array, []

    def interrupted_on_the_second_array(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted_on_the_second_array)
    with pytest.raises(KeyboardInterrupt):
        fa.save(path, {"a": np.ones(1000), "b": np.ones(1000)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_saving_onto_a_directory_fails_cleanly(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        fa.save(tmp_path / "dir", {"a": np.ones(2)})
    assert os.listdir(tmp_path) == ["dir"] and os.listdir(tmp_path / "dir") == []


# --- bad files: ValueError naming the file, and no code run --------------------------------

HOSTILE = hostile_files()


@pytest.mark.parametrize("data", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_files_are_value_errors(tmp_path, data):
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"^load: '.*bad\.npz': "):
        fa.load(path)


def test_lies_about_sizes_allocate_nothing(tmp_path):
    path = tmp_path / "bad.npz"
    for lie in ("huge shape (2**40 float64) in a tiny file", "stored member claiming 60 MB",
                "zip bomb past the default cap", "header size larger than the data"):
        path.write_bytes(HOSTILE[lie])
        tracemalloc.start()
        with pytest.raises(ValueError):
            fa.load(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20, (lie, peak)


def test_error_messages_name_the_problem(tmp_path):
    def error(data, **kwargs):
        (tmp_path / "f.npz").write_bytes(data)
        with pytest.raises(ValueError) as info:
            fa.load(tmp_path / "f.npz", **kwargs)
        return str(info.value)

    assert "'w.npy' declares shape (1099511627776,) of float64 (8796093022208 bytes) but " \
           "holds 0 bytes" in error(HOSTILE["huge shape (2**40 float64) in a tiny file"])
    assert "is not a .npy array" in error(HOSTILE["member that is not a .npy array"])
    assert "has dtype object" in error(HOSTILE["object dtype"])
    assert "structured dtype" in error(HOSTILE["structured dtype"])
    assert "'w.npy' and 'w.npy' collide" in error(HOSTILE["duplicate member names"])
    assert "'a\\x00b.npy' holds a NUL" in error(HOSTILE["member name holding NUL"])
    assert "past the cap" in error(HOSTILE["zip bomb past the default cap"])
    assert "'w.npy' claims 62914688 bytes that the file does not hold" in error(
        HOSTILE["stored member claiming 60 MB"])
    missing = HOSTILE["structure referring to a missing member"]
    assert "refers to 'missing.npy'" in error(missing)
    assert "single .npy array" in error(HOSTILE["single .npy file"])
    assert "it starts with b'these '" in error(HOSTILE["text"])


def test_max_bytes_caps_what_the_members_expand_to(tmp_path):
    (tmp_path / "bomb.npz").write_bytes(zip_bomb(10 << 20))         # 10 MB in ~10 kB
    assert fa.load(tmp_path / "bomb.npz")["w"].nbytes == 10 << 20
    with pytest.raises(ValueError, match=r"past the cap of 1048576 \(load's max_bytes\)"):
        fa.load(tmp_path / "bomb.npz", max_bytes=1 << 20)
    fa.save(tmp_path / "ckpt.npz", {"w": np.ones(1000)})
    with pytest.raises(ValueError, match="past the cap of 100"):
        fa.load(tmp_path / "ckpt.npz", max_bytes=100)
    with pytest.raises(ValueError, match="max_bytes must be None or an int >= 0, got -1"):
        fa.load(tmp_path / "ckpt.npz", max_bytes=-1)


def test_truncated_files_are_value_errors(tmp_path):
    fa.save(tmp_path / "full.npz", checkpoint())
    data = (tmp_path / "full.npz").read_bytes()
    for length in range(0, len(data), 97):
        (tmp_path / "cut.npz").write_bytes(data[:length])
        with pytest.raises(ValueError, match="cut.npz"):
            fa.load(tmp_path / "cut.npz")


def test_corrupted_data_fails_its_crc(tmp_path):
    fa.save(tmp_path / "ckpt.npz", {"w": np.arange(1000.0)})
    data = bytearray((tmp_path / "ckpt.npz").read_bytes())
    data[data.index(np.arange(1000.0).tobytes()) + 4000] ^= 1
    (tmp_path / "ckpt.npz").write_bytes(data)
    with pytest.raises(ValueError, match="Bad CRC-32"):
        fa.load(tmp_path / "ckpt.npz")


def test_directories_and_devices_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a regular file"):
        fa.load(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="'/dev/zero' is not a regular file"):
            fa.load("/dev/zero")


class Payload:
    """Unpickling this creates the file `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_is_never_loaded(tmp_path):
    marker = tmp_path / "code-ran"
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="not an .npz archive"):
        fa.load(raw)
    archive = tmp_path / "objects.npz"
    np.savez(archive, w=np.ones(2), evil=np.array([Payload(marker)], dtype=object))
    with pytest.raises(ValueError, match="'evil.npy' has dtype object"):
        fa.load(archive)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))   # the payload does work when unpickled
    assert marker.exists()


def test_missing_file_keeps_its_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        fa.load(tmp_path / "nowhere.npz")
