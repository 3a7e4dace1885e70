"""The archive layout that save (writing.py) and load (reading.py) share: the structure
member's name, how deep a structure may nest, which dtypes a .npy member may hold, and
which member names np.load cannot tell apart."""

STRUCTURE = "__fastad__.json"   # the member holding the structure
ROOT = "arr_0"                  # the member name of an array saved on its own (np.savez's)
MAX_DEPTH = 100                 # levels of nesting, for save and load alike


def dtype_problem(dtype):
    """Why arrays of `dtype` cannot be stored in .npy without pickle, or None."""
    if dtype.names is not None or dtype.subdtype is not None:
        return f"has a structured dtype {dtype}, which fa.save does not store"
    if dtype.kind == "O":
        return "has dtype object (Python objects), which only pickle could store"
    if dtype.kind not in "biufcmMSUV" or dtype.itemsize == 0:
        return f"has dtype {dtype}, which .npy cannot store without pickle"
    return None


def name_collision(names):
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
