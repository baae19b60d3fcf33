"""The package's layering: every import goes down (README, "Where to find what"), so no import circle exists."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "sevenomni"

# Lowest first. A module may import modules of a strictly lower layer, and of its own unit
# (the subpackage, or the module itself); nn and data share a rank and must not import each other.
LAYERS = {
    "sevenomni.core": 0,
    "sevenomni.nn": 1, "sevenomni.data": 1,
    "sevenomni.model_io": 2,
    "sevenomni.calculators": 3,
    "sevenomni.analysis": 4, "sevenomni.bridging": 4, "sevenomni.md": 4,
    "sevenomni.train": 5,
    "sevenomni.experiments": 6, "sevenomni.testing": 6,
    "sevenomni.cli": 7, "sevenomni": 7,
    "sevenomni.__main__": 8,
    # deprecated paths (one release): shims above everything they re-export
    "sevenomni.calculator": 9, "sevenomni.checkpoint": 9, "sevenomni.loading": 9,
}


def unit(module: str) -> str:
    """The layered unit a dotted module name belongs to: ``sevenomni.nn.model`` -> ``sevenomni.nn``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported sevenomni module, line) for every import, lazy ones included."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sevenomni":
                found.append((module, node.module, node.lineno))
            elif isinstance(node, ast.Import):
                found += [(module, a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "sevenomni"]
    return found


def test_every_unit_has_a_layer():
    units = {unit(m) for m, _, _ in imports()} | {unit(t) for _, t, _ in imports()}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


def test_every_import_goes_down():
    upward = []
    for module, target, line in imports():
        source_unit, target_unit = unit(module), unit(target)
        if source_unit == target_unit:
            continue
        if LAYERS[target_unit] >= LAYERS[source_unit]:
            upward.append(f"{module}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_the_rule_catches_a_back_edge(tmp_path, monkeypatch):
    """A data module importing nn (the edge this test was written against) is reported."""
    fake = tmp_path / "sevenomni" / "data"
    fake.mkdir(parents=True)
    (fake / "spec.py").write_text("from sevenomni.nn.config import Architecture\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "sevenomni")
    try:
        test_every_import_goes_down()
    except AssertionError as error:
        assert "sevenomni.data.spec:1 imports sevenomni.nn.config" in str(error)
    else:
        raise AssertionError("the back-edge was not reported")
