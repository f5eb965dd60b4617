"""The helpers package installs on its own (as from a git URL on Colab or Binder)."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest


@pytest.mark.slow
def test_wheel_contains_package_and_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), "."], check=True)
    wheel = next(tmp_path.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("helpers/__init__.py", "helpers/pipeline.py", "helpers/emulator.py",
              "helpers/data/lines_strong.csv", "helpers/data/benchmarks.csv",
              "helpers/data/sky_paranal.npz", "helpers/data/lines_ges_hr.csv"):
        assert f in names, f


def test_citation_and_licence_agree_with_the_package():
    import tomllib

    import yaml

    from helpers import paths

    cff = yaml.safe_load((paths.REPO / "CITATION.cff").read_text(encoding="utf-8"))
    meta = tomllib.loads((paths.REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert cff["preferred-citation"]["doi"] == "10.1051/0004-6361/202244766"  # Ambrosch et al. 2023
    assert cff["license"] == meta["license"] == "BSD-3-Clause"  # SPDX expression (PEP 639)
    assert cff["version"] == meta["version"]
    assert "BSD 3-Clause" in (paths.REPO / "LICENSE").read_text(encoding="utf-8")


def test_repository_url_is_the_same_everywhere():
    import tomllib

    import yaml

    from helpers import paths

    meta = tomllib.loads((paths.REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    cff = yaml.safe_load((paths.REPO / "CITATION.cff").read_text(encoding="utf-8"))
    cfg = yaml.safe_load((paths.BOOK / "_config.yml").read_text(encoding="utf-8"))
    repo = meta["urls"]["Repository"]
    assert cfg["repository"]["url"] == cff["repository-code"] == repo
    assert meta["urls"]["Issues"] == repo + "/issues"
    assert cfg["html"]["baseurl"] == cff["url"] == meta["urls"]["Documentation"]
    assert cfg["html"]["use_issues_button"] and cfg["html"]["use_repository_button"]
    assert cfg["launch_buttons"]["binderhub_url"] and cfg["launch_buttons"]["colab_url"]


def _helpers_import_graph() -> dict[str, set[str]]:
    """Which helper modules each helper module imports, at module level or inside functions."""
    import ast

    from helpers import paths

    mods = {p.stem for p in paths.PACKAGE.glob("*.py")}
    edges = {}
    for p in paths.PACKAGE.glob("*.py"):
        deps = set()
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.ImportFrom) and (n.level == 1 or (n.module or "").startswith("helpers")):
                parts = (n.module or "").split(".")
                sub = parts[0] if n.level == 1 else (parts[1] if len(parts) > 1 else "")
                deps.update([sub] if sub else [a.name for a in n.names])
        edges[p.stem] = {d for d in deps if d in mods and d != p.stem}
    return edges


def test_helper_modules_depend_downwards_without_circles():
    edges = _helpers_import_graph()

    def reach(a):
        seen, todo = set(), [a]
        while todo:
            for b in edges.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    circles = sorted((a, b) for a in edges for b in edges[a] if a in reach(b))
    assert not circles, f"import circles (a imports b, b reaches a): {circles}"
    assert "inference" in edges and "model" in edges["inference"] and "inference" not in reach("model")
    assert not ({"pipeline", "book"} & reach("model"))  # the bottom does not reach the top


def _helper_names_used(tree) -> list[tuple[str, str, int]]:
    """(module, attribute, line) for every ``alias.attr`` where ``alias`` is a helpers module
    imported in ``tree`` (``from helpers import x as y``, ``import helpers.x as y``), and every
    name imported with ``from helpers.x import name``."""
    import ast

    alias, used = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "helpers":
            for a in node.names:
                if node.module == "helpers":
                    alias[a.asname or a.name] = f"helpers.{a.name}"
                else:
                    used.append((node.module, a.name, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("helpers.") and a.asname:
                    alias[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in alias:
            used.append((alias[node.value.id], node.attr, node.lineno))
    return used


def test_scripts_benches_and_notebooks_use_only_helper_names_that_exist():
    """A renamed helper must not leave a script, a bench or a chapter calling the old name (a
    bench once called ``ensemble.split_train_test`` long after it became ``split_rows``)."""
    import ast
    import importlib
    import json

    from helpers import paths

    sources = [(p, p.read_text(encoding="utf-8")) for folder in ("scripts", "bench")
               for p in sorted((paths.REPO / folder).glob("*.py"))]
    for nb in sorted(paths.NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        sources.append((nb, "\n".join(ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!")))))
    missing, n = [], 0
    for path, text in sources:
        for module, attr, line in _helper_names_used(ast.parse(text)):
            n += 1
            mod = importlib.import_module(module)
            if not hasattr(mod, attr):
                try:
                    importlib.import_module(f"{module}.{attr}")
                except ImportError:
                    missing.append(f"{path.name}:{line}: {module}.{attr}")
    assert n > 100  # the walk sees the helpers the scripts and chapters use
    assert not missing, missing
