"""Every notebook in notebooks/ runs with nbclient against the installed kernelspec, outputs checked."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def run_notebook(name: str, kernel_name: str, folder: Path) -> str:
    """Execute a copy of the notebook inside `folder`; return all its text output."""
    shutil.copytree(NOTEBOOKS, folder, dirs_exist_ok=True)
    notebook = nbformat.read(folder / name, as_version=4)
    NotebookClient(notebook, kernel_name=kernel_name, timeout=300, startup_timeout=90,
                   resources={"metadata": {"path": str(folder)}}).execute()
    nbformat.write(notebook, folder / name)
    # A cell's stream outputs run together, as a frontend shows them: ipykernel may split one print()
    # into two messages when its flush timer fires between the print's pieces.
    return "\n".join("".join(output.get("text", "") for output in cell.outputs)
                     for cell in notebook.cells if cell.cell_type == "code")


def test_every_notebook_has_a_check() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


def check_graph_basics(text: str, folder: Path, version: str = "1.15.5") -> None:
    assert f"TensorFlow {version}" in text
    weights = re.search(r"weights \[([-\d.]+), ([-\d.]+)\] bias ([-\d.]+)", text)
    assert weights, text
    assert [round(float(v)) for v in weights.groups()] == [3, -2, 1]
    assert float(re.search(r"^loss ([\d.]+)$", text, re.M).group(1)) < 0.01
    assert "trained 300 steps at learning rate 0.1" in text
    checkpoint = folder / "checkpoints" / "linear.ckpt.index"
    assert checkpoint.exists() and checkpoint.stat().st_uid == os.getuid()


def check_contrib(text: str, folder: Path, version: str = "1.15.5") -> None:
    assert f"TensorFlow {version} - tf.contrib available: True" in text
    assert '"hidden_units": 8' in text and "fully_connected/weights:0" in text
    assert "XOR predictions: [0, 1, 1, 0]" in text


def check_files(text: str, folder: Path, version: str = "1.15.5") -> None:
    assert f"working directory: {folder}" in text
    assert "rows read: 200 positives: 100" in text
    assert float(re.search(r"accuracy ([\d.]+)", text).group(1)) >= 0.95
    predictions = folder / "output" / "predictions.csv"
    assert len(predictions.read_text().splitlines()) == 201
    assert predictions.stat().st_uid == os.getuid()
    assert (folder / "output" / "model" / "saved_model.pb").exists()
    assert list((folder / "output" / "logs").glob("events.out.tfevents.*"))


CHECKS = {
    "tf1-graph-basics.ipynb": check_graph_basics,
    "tf1-contrib.ipynb": check_contrib,
    "tf1-files.ipynb": check_files,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook(name: str, tf1_kernel: str, tmp_path: Path) -> None:
    text = run_notebook(name, tf1_kernel, tmp_path)
    CHECKS[name](text, tmp_path)
    # TensorFlow's deprecation notices are off by default (quiet_deprecations): results, not noise.
    assert "is deprecated" not in text and "Instructions for updating" not in text, text


def test_papermill_parameters_reach_tf1_code(tf1_kernel: str, tmp_path: Path) -> None:
    import papermill

    shutil.copytree(NOTEBOOKS, tmp_path, dirs_exist_ok=True)
    executed = papermill.execute_notebook(
        str(tmp_path / "tf1-graph-basics.ipynb"), str(tmp_path / "out.ipynb"),
        parameters={"learning_rate": 0.05, "steps": 40}, kernel_name=tf1_kernel, cwd=str(tmp_path),
        progress_bar=False, start_timeout=90)
    text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "trained 40 steps at learning rate 0.05" in text
