"""The documentation stays true: links resolve, the README stays a front page, its generated tables equal what
the code generates, docs/ARCHITECTURE.md mirrors the layers contract and the package, and the layers hold.

With CI set, a missing `lint-imports` fails the layers test; elsewhere it skips with the fix.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
README_MAX_LINES = 220  # a front page; everything else lives in docs/
INSTALL = 'pip install -e ".[test]"  (import-linter provides lint-imports)'


def doc_files() -> list[Path]:
    files = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def _strip_code(text: str) -> str:
    """Markdown without fenced code blocks and inline code: what is inside them is not a link or a heading."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)


def relative_links(path: Path) -> list[str]:
    text = _strip_code(path.read_text(encoding="utf-8"))
    targets = LINK.findall(text) + HTML_SRC.findall(text)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]  # http:, https:, mailto:, ...


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped (inline code kept as text), spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        slug = github_anchor(heading)
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("`--model`: any checkpoint") == "--model-any-checkpoint"
    assert github_anchor("The output folder (`--output-dir OUT`)") == "the-output-folder---output-dir-out"
    assert github_anchor("Walk-through: train → predict → push → Space") == "walk-through-train--predict--push--space"


def test_every_doc_is_checked():
    names = {f.relative_to(ROOT).as_posix() for f in doc_files()}
    assert {"README.md", "CHANGELOG.md", "docs/ARCHITECTURE.md", "docs/usage.md"} <= names


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in relative_links(doc):
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links:\n  " + "\n  ".join(broken)


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail "
                                       "to a page in docs/ and link it.")


def _between(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, flags=re.S)
    assert match, f"markers <!-- {name}:start --> / <!-- {name}:end --> not found"
    return match.group(1)


def test_readme_strategy_table_is_the_registrys():
    from hf_transfer.training.strategies import strategy_table_markdown

    expected = strategy_table_markdown().strip()
    actual = _between(README.read_text(encoding="utf-8"), "strategies").strip()
    assert actual == expected, (
        "README.md's strategy table differs from the registry. Regenerate it: put the output of\n  python -c "
        "'from hf_transfer.training.strategies import strategy_table_markdown as t; print(t())'\nbetween "
        "<!-- strategies:start --> and <!-- strategies:end -->.")


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "hf-transfer") -> list[str]:
    """Every command line `hf-transfer X [Y]` the parser accepts (nested sub-commands included)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subcommands(sub, f"{prefix} {name}")
                found.extend(nested or [f"{prefix} {name}"])
    return found


def test_readme_command_table_lists_every_subcommand():
    from hf_transfer.cli import build_parser

    text = README.read_text(encoding="utf-8")
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    listed = " ".join(re.findall(r"`(hf-transfer [^`]*)`", "\n".join(rows)))
    commands = _subcommands(build_parser())
    assert "hf-transfer space push" in commands and "hf-transfer train" in commands
    missing = [c for c in commands if not re.search(re.escape(c) + r"(?![\w-])", listed)]
    assert not missing, f"README.md's command table (## Commands) does not list: {', '.join(missing)}"


def test_layers_hold():
    """`lint-imports` keeps the import-linter contracts of pyproject.toml (layers, no sibling cycles)."""
    exe = shutil.which("lint-imports") or shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"lint-imports not found; CI must check the layers: {INSTALL}", pytrace=False)
        pytest.skip(f"lint-imports not found. Install it to check the layers: {INSTALL}")
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"lint-imports found imports against the layers:\n{proc.stdout}\n{proc.stderr}"


MAX_FUNCTION_LINES = 60  # a function you can read at once; docs/ARCHITECTURE.md states the rule


def test_no_function_is_longer_than_a_screen():
    """Every function and method in the library, decorators and docstring included, fits in 60 lines."""
    too_long = []
    for path in sorted((ROOT / "hf_transfer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not too_long, "split these into named steps: " + "; ".join(too_long)


def _pyproject_layers() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return layers


def test_architecture_layers_equal_the_contract():
    block = _between(ARCHITECTURE.read_text(encoding="utf-8"), "layers")
    documented = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("```")]
    assert documented == _pyproject_layers(), (
        "docs/ARCHITECTURE.md's layer list (between <!-- layers:start/end -->) differs from the layers contract "
        "under [tool.importlinter] in pyproject.toml: change both together.")


def _documented(rel: str, names: set[str]) -> bool:
    """A module is documented by its own path, a folder row (`evaluation/metric_modules/`) or a glob (`commands/*.py`)."""
    return any(rel == name or (name.endswith("/") and rel.startswith(name)) or ("*" in name and fnmatch(rel, name))
               for name in names)


def test_architecture_has_a_row_per_module():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    names = set(re.findall(r"^\| `([^`]+)`", text, flags=re.M))  # the first cell of each table row
    package = ROOT / "hf_transfer"
    missing = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if path.name == "__init__.py" and path.parent != package:
            continue  # subpackage __init__.py: a docstring only (checked below)
        if not _documented(rel, names):
            missing.append(rel)
    assert not missing, f"docs/ARCHITECTURE.md has no row for: {', '.join(missing)} (say what each does)"


def _is_lazy_export_table(node: ast.AST) -> bool:
    """``from hf_transfer._exports import lazy_exports`` or ``... = lazy_exports(__name__, {name: "module"})``."""
    if isinstance(node, ast.ImportFrom):
        return node.module == "hf_transfer._exports"
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
        return getattr(node.value.func, "id", None) == "lazy_exports"
    return isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)  # a module name as a constant


def test_subpackage_inits_are_docstrings_or_lazy_export_tables():
    """The Space publisher vendors what imports reach: an import in a subpackage __init__ drags it all along. So a
    subpackage __init__ holds a docstring and at most a table of public names whose modules are named as strings."""
    heavy = []
    for init in sorted((ROOT / "hf_transfer").glob("*/__init__.py")):
        body = ast.parse(init.read_text()).body
        if any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) and
               not _is_lazy_export_table(node) for node in body):
            heavy.append(init.relative_to(ROOT).as_posix())
    assert not heavy, f"these subpackage __init__.py files hold code (a docstring and lazy_exports only): {heavy}"


def _public_names() -> list[str]:
    import hf_transfer

    return list(hf_transfer.__all__)


def test_architecture_lists_the_public_api():
    block = _between(ARCHITECTURE.read_text(encoding="utf-8"), "api")
    documented = set(re.findall(r"`([A-Za-z_]\w*)`", block))
    missing = [name for name in _public_names() if name not in documented]
    extra = [name for name in re.findall(r"^\| `([A-Za-z_]\w*)`", block, flags=re.M) if name not in _public_names()]
    assert not missing, f"docs/ARCHITECTURE.md's public API table lacks: {missing}"
    assert not extra, f"docs/ARCHITECTURE.md's public API table lists names hf_transfer does not export: {extra}"


def test_architecture_lists_each_subpackage_public_api():
    """Every name in a subpackage's __all__ has a row under its package in the table, and every row is exported."""
    import importlib

    block = _between(ARCHITECTURE.read_text(encoding="utf-8"), "subpackage-api")
    documented, package = {}, None
    for line in block.splitlines():
        heading = re.match(r"^\| \*\*`(hf_transfer\.\w+)`\*\*", line)
        if heading:
            package = heading.group(1)
            continue
        names = re.match(r"^\| ((?:`\w+`(?:, )?)+) \|", line)
        if names and package:
            documented.setdefault(package, set()).update(re.findall(r"`(\w+)`", names.group(1)))
    assert set(documented) == {"hf_transfer.data", "hf_transfer.modeling", "hf_transfer.training",
                               "hf_transfer.evaluation", "hf_transfer.publish"}
    for package, names in documented.items():
        exported = set(importlib.import_module(package).__all__)
        assert names == exported, (package, f"undocumented: {sorted(exported - names)}",
                                   f"not exported: {sorted(names - exported)}")


def test_documented_imports_from_hf_transfer_exist():
    """Every `from hf_transfer import ...` in the docs names something the package exports."""
    public = set(_public_names())
    wrong = []
    for doc in doc_files():
        for names in re.findall(r"^\s*from hf_transfer import ([\w, ]+)$", doc.read_text(encoding="utf-8"), re.M):
            wrong += [f"{doc.name}: {n.strip()}" for n in names.split(",") if n.strip() not in public]
    assert not wrong, f"the docs import names hf_transfer does not export: {wrong}"


def test_readme_api_snippet_load_classifier_takes_what_train_returns():
    """README: `load_classifier(result.output_dir).predict("photo.jpg")`, where `result.output_dir` is a Path."""
    import json

    from hf_transfer import RunResult, load_classifier

    assert RunResult.__dataclass_fields__["output_dir"].type in ("Path", Path)
    folder = ROOT / "tests" / "fixtures" / "run_0_1_0"  # a run folder, as train() leaves one
    expected = json.loads((ROOT / "tests" / "fixtures" / "run_0_1_0_predictions.json").read_text())
    image = "examples/cat/00.png"
    got = load_classifier(folder).predict(folder / image, top_k=3)
    assert [r["label"] for r in got] == [r["label"] for r in expected[image]]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected[image]], abs=1e-5)
