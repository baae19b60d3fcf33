"""README.md quotes command outputs only through marked blocks rendered from committed results.

A stale README (a block that differs from what ``benchmarks/results/readme_outputs.json`` or a
benchmark's results file renders) fails here; `python scripts/readme_outputs.py --write-readme` fixes it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import readme_blocks  # noqa: E402
import readme_outputs  # noqa: E402


def readme_blocks_by_name() -> dict[str, readme_blocks.Block]:
    blocks = readme_blocks.find_blocks((ROOT / "README.md").read_text())
    names = [block.name for block in blocks]
    assert len(names) == len(set(names)), f"README block names used twice: {sorted({n for n in names if names.count(n) > 1})}"
    return {block.name: block for block in blocks}


def test_every_readme_block_equals_its_rendering():
    rendered = readme_outputs.render_all(readme_outputs.load_results())
    stale = [f"{block.name} (README line {block.line})" for name, block in readme_blocks_by_name().items()
             if block.body != rendered[name].strip("\n")]
    assert not stale, ("README blocks differ from the committed results: " + ", ".join(stale)
                       + "; run `python scripts/readme_outputs.py --write-readme`")


def test_every_marker_names_a_piece_and_every_piece_has_a_marker():
    markers = set(readme_blocks_by_name())
    known = set(readme_outputs.marker_names())
    assert markers - known == set(), f"README markers without a piece: {sorted(markers - known)}"
    pieces_quoted = {name.split(".")[0] for name in markers}
    assert set(readme_outputs.PIECES) - pieces_quoted == set(), \
        f"pieces the README never quotes: {sorted(set(readme_outputs.PIECES) - pieces_quoted)}"


def test_every_command_piece_has_a_committed_record_of_its_commands():
    results = readme_outputs.load_results()
    for name, piece in readme_outputs.PIECES.items():
        if piece.kind != "command":
            assert (ROOT / piece.source).is_file(), f"{name}: no results file {piece.source}"
            continue
        assert name in results, f"{name}: not in readme_outputs.json"
        record = results[name]
        assert record["commands"] == list(piece.commands), f"{name}: recorded commands differ from the registry's"
        assert record["numbers"] or piece.parse is readme_outputs.no_numbers, f"{name}: no numbers parsed from its output"
        assert {"wall_s", "date", "sevenomni_version", "commit"} <= set(record)


def test_the_readme_shows_every_command_a_piece_runs_for_it():
    """The commands that made a quoted output are the README's own (line continuations joined)."""
    readme = re.sub(r"\\\n\s+", "", (ROOT / "README.md").read_text())
    missing = [f"{name}: {command}" for name, piece in readme_outputs.PIECES.items()
               for command in piece.setup + piece.commands if command not in readme]
    assert not missing, "commands the README does not show:\n" + "\n".join(missing)


def test_blocks_are_found_replaced_and_unpaired_markers_refused():
    text = ("a <!-- readme-output: x.time -->17 s<!-- /readme-output --> b\n"
            "<!-- readme-output: y -->\n```\nold\n```\n<!-- /readme-output -->\n")
    assert [(block.name, block.body) for block in readme_blocks.find_blocks(text)] == [("x.time", "17 s"), ("y", "```\nold\n```")]
    new = readme_blocks.replace_blocks(text, {"x.time": "77 s", "y": "```\nnew\n```"})
    assert new == text.replace("17 s", "77 s").replace("old", "new")
    with pytest.raises(readme_blocks.BlockError, match="no rendering"):
        readme_blocks.replace_blocks(text, {"y": ""})
    with pytest.raises(readme_blocks.BlockError, match="not closed"):
        readme_blocks.find_blocks("<!-- readme-output: a --> <!-- readme-output: b --> <!-- /readme-output -->")
    with pytest.raises(readme_blocks.BlockError, match="paired"):
        readme_blocks.find_blocks("<!-- readme-output: a --> text")


def test_a_changed_result_makes_the_readme_stale():
    """The check can fail: one number changed in the results changes a block's rendering."""
    results = readme_outputs.load_results()
    before = readme_outputs.render_all(results)["eval.molecule_scale"]
    record = results["eval"]["numbers"]["eval0"]["test_molecule_gfn1"]["gfn1"]
    record["scale"] += 0.5
    assert readme_outputs.render_all(results)["eval.molecule_scale"] != before


@pytest.mark.slow
def test_a_cheap_piece_reruns_with_the_recorded_structure(tmp_path):
    """The ML-IAP export piece (a few seconds, no training) run afresh: same commands, same lines."""
    committed = readme_outputs.load_results()["mliap_export"]
    fresh = readme_outputs.run_piece(readme_outputs.PIECES["mliap_export"], tmp_path)
    assert fresh["commands"] == committed["commands"]
    assert [line.split(":")[0] for line in fresh["outputs"][0].splitlines()] == \
        [line.split(":")[0] for line in committed["outputs"][0].splitlines()]
    assert readme_outputs.PIECES["mliap_export"].views[""]({"mliap_export": fresh}).startswith("```")
