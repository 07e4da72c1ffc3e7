"""The Colab notebook: valid nbformat 4, code that compiles, and only settings the
launcher knows (a typo in an env var name would be silently ignored on Colab)."""

from __future__ import annotations

import ast
import json
import os
import re

import pytest

from rgym_exp.config import SETTINGS
from tests.swarm_helpers import REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "rl_swarm_colab.ipynb")


@pytest.fixture(scope="module")
def notebook() -> dict:
    with open(NOTEBOOK) as fh:
        return json.load(fh)


def code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def python_only(source: str) -> str:
    """The cell as Python: IPython's shell (!) and magic (%) lines become ``pass`` at
    their indentation (IPython turns them into calls), so blocks stay valid."""
    lines = []
    for line in source.splitlines():
        body = line.lstrip()
        lines.append(line[: len(line) - len(body)] + "pass" if body.startswith(("!", "%")) else line)
    return "\n".join(lines)


def test_notebook_is_valid_nbformat_4(notebook):
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["language"] == "python"
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cell["id"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    try:
        import nbformat
    except ImportError:
        return
    nbformat.validate(nbformat.reads(json.dumps(notebook), as_version=4))


def test_every_code_cell_compiles(notebook):
    for i, source in enumerate(code_cells(notebook)):
        compile(python_only(source), f"<cell {i}>", "exec")


def env_names(source: str) -> set[str]:
    """Names set by os.environ['X'] = ..., os.environ.update/setdefault and dict(os.environ, X=...)."""
    names = set()
    for node in ast.walk(ast.parse(python_only(source))):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ":
                    names.add(ast.literal_eval(t.slice))
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("os.environ.update", "os.environ.setdefault") and node.args and \
                    isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
            if func in ("os.environ.update", "dict") and (func != "dict" or (
                    node.args and ast.unparse(node.args[0]) == "os.environ")):
                names |= {k.arg for k in node.keywords if k.arg}
    return names


def test_every_env_var_the_notebook_sets_is_a_setting(notebook):
    names = set().union(*(env_names(s) for s in code_cells(notebook)))
    allowed = set(SETTINGS) | {"PYTHONUNBUFFERED"}  # Python's own, not a swarm setting
    assert {"GDRIVE_PATH", "EXPERIMENT_NAME", "NODE_ROLE", "NODE_ID", "NUM_WORKERS"} <= names
    assert names <= allowed, f"not settings of rgym_exp.config.Config: {names - allowed}"


def test_notebook_covers_drive_both_paths_status_and_report(notebook):
    text = "\n".join(code_cells(notebook))
    for needed in ("drive.mount('/content/drive')", "pip install -q -r requirements.txt",
                   "start('swarm',", "start('coordinator',", "start('worker',",
                   "python -m rgym_exp.status", "python -m rgym_exp.report", "reward_per_round.png"):
        assert needed in text, needed
    assert "PIPE" not in text  # child output goes to files, never to a pipe nobody reads
    assert not re.search(r"pip install[^\n]*\btorch\b", text)  # Colab's torch is kept
