"""fa.save / fa.load: exact .npz round trips, and clear errors without running any code."""
import io
import pathlib
import pickle

import numpy as np
import pytest

import fastad as fa


def assert_identical(loaded, original):
    """Same dtype (byte order included), shape and bytes (NaN, -0.0 and all)."""
    assert loaded.dtype == original.dtype
    assert loaded.shape == original.shape
    assert np.ascontiguousarray(loaded).tobytes() == np.ascontiguousarray(original).tobytes()


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
        "name/with/slashes and spaces.npy": np.ones(2),
    }


def test_dict_round_trip_is_exact(tmp_path):
    arrays = assorted_arrays()
    path = tmp_path / "state.npz"
    fa.save(path, arrays)
    loaded = fa.load(path)
    assert list(loaded) == list(arrays)
    for key, original in arrays.items():
        assert isinstance(loaded[key], np.ndarray)
        assert_identical(loaded[key], original)


def test_list_round_trip_uses_index_keys(tmp_path):
    arrays = list(assorted_arrays().values())[:5]
    fa.save(str(tmp_path / "params.npz"), arrays)
    loaded = fa.load(str(tmp_path / "params.npz"))
    assert list(loaded) == [str(i) for i in range(len(arrays))]
    for i, original in enumerate(arrays):
        assert_identical(loaded[str(i)], original)


def test_tensors_are_saved_as_their_values(tmp_path):
    w = fa.Parameter(np.arange(6.0).reshape(2, 3), dtype=np.float32)
    fa.save(tmp_path / "t.npz", [w, fa.tensor(np.ones(2))])
    loaded = fa.load(tmp_path / "t.npz")
    assert_identical(loaded["0"], w.value)
    assert_identical(loaded["1"], np.ones(2))


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


def test_path_is_used_as_given(tmp_path):
    path = tmp_path / "model.ckpt"
    fa.save(path, {"a": np.ones(2)})
    assert path.exists() and not (tmp_path / "model.ckpt.npz").exists()
    assert_identical(fa.load(path)["a"], np.ones(2))


def test_reads_numpy_savez_files(tmp_path):
    np.savez_compressed(tmp_path / "np.npz", a=np.arange(4), b=np.eye(2, dtype=np.float32))
    loaded = fa.load(tmp_path / "np.npz")
    assert_identical(loaded["a"], np.arange(4))
    assert_identical(loaded["b"], np.eye(2, dtype=np.float32))


# --- bad files ------------------------------------------------------------------------

class Payload:
    """Unpickling this creates the file `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_text_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("these are not arrays\n")
    with pytest.raises(ValueError, match=r"notes\.npz' is not an \.npz archive"):
        fa.load(path)


def test_empty_and_truncated_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not an .npz archive"):
        fa.load(empty)
    full = tmp_path / "full.npz"
    fa.save(full, {"w": np.arange(1000.0)})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(full.read_bytes()[:4000])
    with pytest.raises(ValueError, match="not a valid .npz"):
        fa.load(truncated)


def test_single_npy_file_is_a_clear_error(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.ones(3))
    with pytest.raises(ValueError, match="single .npy array"):
        fa.load(path)


def test_pickle_is_never_loaded(tmp_path):
    marker = tmp_path / "code-ran"
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="not an .npz archive"):
        fa.load(raw)
    archive = tmp_path / "objects.npz"
    np.savez(archive, w=np.ones(2), evil=np.array([Payload(marker)], dtype=object))
    with pytest.raises(ValueError, match="not a valid .npz"):
        fa.load(archive)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))   # the payload does work when unpickled
    assert marker.exists()


def test_missing_file_keeps_its_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        fa.load(tmp_path / "nowhere.npz")


# --- bad objects ------------------------------------------------------------------------

@pytest.mark.parametrize("obj, pattern", [
    ({1: np.ones(2)}, "keys must be strings"),
    ({"a": [1.0, 2.0]}, "'a' must be an ndarray or a Tensor"),
    ({"a": np.array([object()], dtype=object)}, "dtype object"),
    ([np.ones(2), "text"], "'1' must be an ndarray"),
    (np.ones(3), "dict of arrays or a list"),
])
def test_bad_objects_are_rejected_before_writing(tmp_path, obj, pattern):
    path = tmp_path / "keep.npz"
    fa.save(path, {"kept": np.arange(3)})
    with pytest.raises(TypeError, match=pattern):
        fa.save(path, obj)
    assert_identical(fa.load(path)["kept"], np.arange(3))   # the old file is untouched


def test_binary_file_objects_work_too():
    buffer = io.BytesIO()
    fa.save(buffer, {"w": np.arange(3.0)})
    buffer.seek(0)
    assert_identical(fa.load(buffer)["w"], np.arange(3.0))
