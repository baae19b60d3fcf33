"""Rewrite imports of sevenomni's pre-0.9 module paths to the package-by-role tree.

    python scripts/migrate_imports.py PATH [PATH ...] [--check]

Rewrites ``.py`` files (``from``/``import`` statements, and dotted names in strings such as
``monkeypatch.setattr("sevenomni.calculator.predict", ...)``) and text files (``.md``, ``.toml``,
``.yaml``, ``.sh``: dotted names and ``sevenomni/...py`` paths). A ``from`` import that names symbols
now living in different modules becomes one line per module. Idempotent: running it twice changes
nothing the second time. ``--check`` only lists the files it would change (exit status 1 if any).
The old paths ``sevenomni.calculator``, ``sevenomni.checkpoint`` and ``sevenomni.loading`` still
import, with a DeprecationWarning, until the next release.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

# Whole modules that moved (old dotted name -> new dotted name).
MODULES = {
    "sevenomni.base": "sevenomni.core.base",
    "sevenomni.keys": "sevenomni.core.keys",
    "sevenomni.files": "sevenomni.core.files",
    "sevenomni.logs": "sevenomni.core.logs",
    "sevenomni.devices": "sevenomni.core.devices",
    "sevenomni.version": "sevenomni.core.version",
    "sevenomni.arguments": "sevenomni.core.arguments",
    "sevenomni.baseline": "sevenomni.core.baseline",
    "sevenomni.checkpoint": "sevenomni.model_io.checkpoint",
    "sevenomni.loading": "sevenomni.model_io.loading",
    "sevenomni.interop.sevenn_export": "sevenomni.model_io.sevenn.export",
    "sevenomni.interop": "sevenomni.model_io",
    "sevenomni.dispersion": "sevenomni.calculators.dispersion",
    "sevenomni.extrapolation": "sevenomni.calculators.extrapolation",
    "sevenomni.dbs_cli": "sevenomni.bridging.cli",
    "sevenomni.data.readers.store": "sevenomni.data.readers.store_source",
    "sevenomni.train.logger": "sevenomni.train.metric_log",
    "sevenomni.analysis.report": "sevenomni.analysis.json_output",
}

# Modules whose symbols went to several new modules: old module -> (default, {symbol: new module}).
SPLIT = {
    "sevenomni.calculator": (
        "sevenomni.calculators.prediction",
        {"SevenOmniCalculator": "sevenomni.calculators.ase_calculator", "has_stress": "sevenomni.data.graph"},
    ),
    "sevenomni.dbs": (
        "sevenomni.bridging.select",
        {name: "sevenomni.bridging.label" for name in ("LabelReport", "label", "_label_chunk", "_temporary_beside")},
    ),
    "sevenomni.interop.sevenn": (
        "sevenomni.model_io.sevenn.convert",
        {
            **{name: "sevenomni.model_io.sevenn.files" for name in (
                "SEVENN_SHORTCUTS", "is_sevenn_checkpoint", "is_sevenn_shortcut", "read_sevenn_checkpoint",
                "resolve_sevenn_checkpoint",
            )},
            **{name: "sevenomni.model_io.sevenn.config" for name in (
                "DEFAULT_TASK_NAME", "sevenn_layer_irreps", "sevenn_model_config",
            )},
            **{name: "sevenomni.model_io.sevenn.weights" for name in ("WeightLink", "sevenn_weight_links")},
        },
    ),
}

LINE_LENGTH = 120  # the project's; a longer rewritten import is wrapped, one name per line
TEXT_SUFFIXES = {".md", ".toml", ".yaml", ".yml", ".sh", ".cfg", ".txt"}
_OLD = sorted([*MODULES, *SPLIT], key=len, reverse=True)
_DOTTED = re.compile(r"(?<![\w.])(" + "|".join(re.escape(m) for m in _OLD) + r")(?![\w])((?:\.\w+)?)")
_PATHS = re.compile(r"(?<![\w/])(" + "|".join(re.escape(m.replace(".", "/")) for m in _OLD) + r")\.py\b")


def new_module(old: str, symbol: str | None = None) -> str:
    """Where ``symbol`` of ``old`` (or the module ``old`` itself) lives now."""
    if old in SPLIT:
        default, moved = SPLIT[old]
        return moved.get(symbol, default) if symbol else default
    return MODULES[old]


def _dotted(match: re.Match) -> str:
    old, tail = match.group(1), match.group(2)
    if old in SPLIT and tail:
        return new_module(old, tail[1:]) + tail
    return new_module(old) + tail


def rewrite_text(text: str) -> str:
    """Dotted module names and ``sevenomni/...py`` paths of moved modules, in any text."""
    text = _PATHS.sub(lambda m: new_module(m.group(1).replace("/", ".")).replace(".", "/") + ".py", text)
    return _DOTTED.sub(_dotted, text)


def _from_lines(node: ast.ImportFrom, indent: str) -> list[str]:
    groups: dict[str, list[str]] = {}
    for alias in node.names:
        name = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
        if node.module in MODULES and node.module + "." + alias.name in MODULES:  # a moved submodule
            target, _, leaf = new_module(node.module + "." + alias.name).rpartition(".")
            name = leaf if alias.asname is None and leaf == alias.name else f"{leaf} as {alias.asname or alias.name}"
            groups.setdefault(target, []).append(name)
            continue
        groups.setdefault(new_module(node.module, alias.name), []).append(name)
    lines = []
    for module, names in groups.items():
        line = f"{indent}from {module} import {', '.join(names)}"
        if len(line) > LINE_LENGTH:
            line = f"{indent}from {module} import (\n" + "".join(f"{indent}    {n},\n" for n in names) + f"{indent})"
        lines.append(line)
    return lines


def rewrite_python(text: str) -> str:
    """``from``/``import`` statements of moved modules, then dotted names in what is left."""
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module in (*MODULES, *SPLIT) and node.level == 0:
            indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)
            comment = re.search(r"\s+#.*$", lines[node.end_lineno - 1].rstrip("\n"))
            new = _from_lines(node, indent)
            if comment:  # a trailing comment (a noqa directive, say) stays with the first line
                head, _, rest = new[0].partition("\n")
                new[0] = head + comment.group(0) + ("\n" + rest if rest else "")
            edits.append((node.lineno - 1, node.end_lineno, new))
    for first, end, new in sorted(edits, reverse=True):
        lines[first:end] = [line + "\n" for line in new]
    return rewrite_text("".join(lines))


def files_under(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found += [p for p in candidates if p.suffix == ".py" or p.suffix in TEXT_SUFFIXES]
    return [p for p in found if ".git" not in p.parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="list the files that would change; change nothing")
    args = parser.parse_args(argv)
    changed = []
    for path in files_under(args.paths):
        text = path.read_text()
        new = rewrite_python(text) if path.suffix == ".py" else rewrite_text(text)
        if new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new)
    for path in changed:
        print(path)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
