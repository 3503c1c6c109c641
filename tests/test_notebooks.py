"""Every notebook runs top to bottom at the smoke profile and keeps its logic in the library."""

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One runs/ for all notebooks, as on a user's machine: the stage, MORL, study and demo notebooks
    reuse the checkpoints the earlier ones made instead of each training the smoke pipeline again."""
    return tmp_path_factory.mktemp("runs")


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_profile(path, tmp_path, monkeypatch, shared_runs):
    monkeypatch.setenv("MIMOLAB_PROFILE", "smoke")
    monkeypatch.setenv("MIMOLAB_RUNS", str(shared_runs))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_clean_and_in_sync_with_its_twin(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    twin = path.with_suffix(".py")
    assert twin.exists(), f"{twin.name} (py:percent twin) is missing"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code == [c.source for c in jupytext.read(twin).cells if c.cell_type == "code"], "run `jupytext --sync`"
    assert "parameters" in nb.cells[[c.cell_type for c in nb.cells].index("code")].metadata.get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_defines_no_long_functions(path):
    """Logic lives in mimolab/: a notebook may define a helper of a few lines, not a training loop."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.end_lineno - node.lineno < 10, f"{node.name} in {path.name} belongs in the library"
