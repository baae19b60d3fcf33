"""README.md and docs/*.md quote command outputs only through marked blocks rendered from committed results.

A stale block (one that differs from what ``benchmarks/results/readme_outputs.json`` or a benchmark's
results file renders) fails here, and so does a rendering that neither README.md nor any docs/*.md
quotes (e.g. a block lost when text moved between them); `python scripts/readme_outputs.py
--write-readme` fixes the first.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import REPO

ROOT = REPO
sys.path.insert(0, str(ROOT / "scripts"))
import readme_blocks  # noqa: E402
import readme_outputs  # noqa: E402


def quoted_blocks() -> dict[str, tuple[Path, readme_blocks.Block]]:
    """Every marked block of README.md and docs/*.md, by name (a name quoted twice fails)."""
    return readme_blocks.blocks_by_name(readme_outputs.documents())


def unquoted_renderings(known: set[str], paths: list[Path]) -> list[str]:
    """The marker names of ``known`` that no file of ``paths`` quotes."""
    return sorted(known - set(readme_blocks.blocks_by_name(paths)))


def test_the_documents_are_the_readme_and_the_docs():
    paths = readme_outputs.documents()
    assert paths[0] == ROOT / "README.md"
    assert {path.name for path in paths[1:]} >= {"ablation.md", "transfer_gap.md", "finetuning.md", "md.md"}


def test_every_block_equals_its_rendering():
    rendered = readme_outputs.render_all(readme_outputs.load_results())
    stale = [f"{name} ({path.relative_to(ROOT)} line {block.line})" for name, (path, block) in quoted_blocks().items()
             if block.body != rendered[name].strip("\n")]
    assert not stale, ("quoted blocks differ from the committed results: " + ", ".join(stale)
                       + "; run `python scripts/readme_outputs.py --write-readme`")


def test_every_marker_names_a_rendering_and_every_rendering_is_quoted():
    markers = set(quoted_blocks())
    known = set(readme_outputs.marker_names())
    assert markers - known == set(), f"markers without a piece: {sorted(markers - known)}"
    missing = unquoted_renderings(known, readme_outputs.documents())
    assert not missing, f"renderings that neither README.md nor docs/*.md quotes: {missing}"


def test_a_rendering_quoted_nowhere_or_twice_is_caught(tmp_path):
    """The check can fail: a block dropped in a move is missing, a block copied into two files is refused."""
    readme, doc = tmp_path / "README.md", tmp_path / "doc.md"
    readme.write_text("a <!-- readme-output: x.time -->17 s<!-- /readme-output -->\n")
    doc.write_text("<!-- readme-output: y -->\n```\nold\n```\n<!-- /readme-output -->\n")
    assert unquoted_renderings({"x.time", "y"}, [readme, doc]) == []
    assert unquoted_renderings({"x.time", "y"}, [readme]) == ["y"]
    doc.write_text(doc.read_text() + "b <!-- readme-output: x.time -->17 s<!-- /readme-output -->\n")
    with pytest.raises(readme_blocks.BlockError, match="quoted twice: README.md line 1 and doc.md line 6"):
        readme_blocks.blocks_by_name([readme, doc])


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


def test_the_documents_show_every_command_a_piece_runs_for_it():
    """The commands that made a quoted output are shown in README.md or docs/*.md (line continuations joined)."""
    shown = "\n".join(re.sub(r"\\\n\s+", "", path.read_text()) for path in readme_outputs.documents())
    missing = [f"{name}: {command}" for name, piece in readme_outputs.PIECES.items()
               for command in piece.setup + piece.commands if command not in shown]
    assert not missing, "commands neither README.md nor docs/*.md shows:\n" + "\n".join(missing)


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


def test_the_readme_sets_up_a_fresh_machine_with_exactly_two_commands():
    """"Set up and run" shows two commands, one that installs and runs the main job, one that runs the
    tests, and CI (`.ci/run`) runs the same install and the same test command."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Set up and run\n", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL)]
    assert commands == ['pip install torch==2.13.0 && pip install -e ".[dev]" && sevenomni train recipes/quickstart.yaml',
                        'python -m pytest -m "not slow"']
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python")]
    assert ci[-1] == commands[1]
    install = commands[0].split(" && ")[:2]
    assert [line.replace(" --quiet --disable-pip-version-check", "").replace("python -m pip", "pip") for line in ci[:2]] == install
