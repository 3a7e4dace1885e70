"""In a source checkout (an editable install), Python imports a compiled tape module in
preference to its .py, even after the .py changed: `import fastad` refuses to run such
stale code instead of silently ignoring an edit."""
import importlib.machinery
from pathlib import Path

PACKAGE = Path(__file__).parent


def refuse_stale_builds(package=PACKAGE, suffixes=tuple(importlib.machinery.EXTENSION_SUFFIXES)):
    """ImportError naming every .py or .pxd newer than its compiled module, when `package`
    sits in a source checkout (setup.py beside it); installed packages are never checked."""
    if not (package.parent / "setup.py").exists():
        return
    stale = []
    for suffix in suffixes:
        for compiled in package.rglob(f"*{suffix}"):
            stem = compiled.name[:-len(suffix)]
            for source in (compiled.with_name(stem + ".py"), compiled.with_name(stem + ".pxd")):
                if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
                    stale.append(str(source.relative_to(package.parent)))
    if stale:
        raise ImportError(
            f"fastad: {', '.join(sorted(stale))} changed after it was compiled: rebuild "
            "with `python setup.py build_ext --inplace -j 2`, or delete the compiled "
            "module to run the .py interpreted")
