"""The ``sevenomni`` command line."""

from __future__ import annotations

import pytest

import sevenomni
from sevenomni.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"sevenomni {sevenomni.__version__}" == "sevenomni 0.1.0"
