"""Checkpoints as .npz archives: arrays in `.npy` members, the structure around them in
JSON, no pickle anywhere.

A file is a zip archive with one `.npy` member per array (written with pickling
disallowed) and a member named STRUCTURE: the nested dicts and lists as JSON, scalars
inline, each array replaced by the name of its member. `load` checks everything a
hostile file could lie about (names, dtypes, sizes) before it allocates or runs anything.

save (writing.py) and load (reading.py) share the layout in archive.py.
"""
from .reading import load
from .writing import save

__all__ = ["save", "load"]
