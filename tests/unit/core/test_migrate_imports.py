"""scripts/migrate_imports.py rewrites the old module paths in a user's code, once, and names what it changed."""

import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "scripts" / "migrate_imports.py"

OLD = '''from sevenomni.calculator import SevenOmniCalculator, predict  # noqa: F401
from sevenomni.interop import sevenn
from sevenomni.dbs import select, label
import sevenomni.checkpoint

monkeypatch_target = "sevenomni.calculator.SevenOmniCalculator"
'''

NEW = '''from sevenomni.calculators.ase_calculator import SevenOmniCalculator  # noqa: F401
from sevenomni.calculators.prediction import predict
from sevenomni.model_io import sevenn
from sevenomni.bridging.select import select
from sevenomni.bridging.label import label
import sevenomni.model_io.checkpoint

monkeypatch_target = "sevenomni.calculators.ase_calculator.SevenOmniCalculator"
'''


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_rewrites_imports_and_dotted_names_once(tmp_path):
    code = tmp_path / "user_code.py"
    notes = tmp_path / "notes.md"
    code.write_text(OLD)
    notes.write_text("see sevenomni/dbs.py and `sevenomni.loading.load_model`\n")
    assert run("--check", tmp_path).returncode == 1
    assert code.read_text() == OLD  # --check changes nothing
    done = run(tmp_path)
    assert done.returncode == 0 and set(done.stdout.split()) == {str(code), str(notes)}
    assert code.read_text() == NEW
    assert notes.read_text() == "see sevenomni/bridging/select.py and `sevenomni.model_io.loading.load_model`\n"
    again = run("--check", tmp_path)
    assert again.returncode == 0 and again.stdout == ""  # idempotent


def test_the_package_has_no_old_paths_left():
    root = SCRIPT.parents[1]
    left = run("--check", root / "sevenomni", root / "tests" / "conftest.py", root / "benchmarks", root / "docs")
    shims = {str(root / "sevenomni" / f"{name}.py") for name in ("calculator", "checkpoint", "loading")}
    assert set(left.stdout.split()) <= shims, left.stdout
