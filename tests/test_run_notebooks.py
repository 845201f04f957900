"""The notebook benchmark (``python -m labkit.run_notebooks``): every notebook's time and peak memory, the total,
the budgets, and a failing notebook reported without stopping the others."""

import json

import nbformat

from labkit.run_notebooks import main


def _notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_benchmark_reports_each_notebook_the_total_and_the_budgets_and_goes_on_after_a_failure(tmp_path, capsys):
    good = _notebook(tmp_path / "01_good.ipynb", "import os\nassert os.environ['LABKIT_QUICK'] == '1'")
    bad = _notebook(tmp_path / "02_bad.ipynb", "raise ValueError('broken on purpose')")
    also = _notebook(tmp_path / "03_after.ipynb", "x = b'x' * (80 * 2**20)  # 80 MB written: shows in the peak")
    out_json = tmp_path / "bench.json"
    status = main([str(good), str(bad), str(also), "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert status == 1, "a failing notebook fails the command"
    assert "02_bad.ipynb" in printed and "FAILED: CellExecutionError" in printed and "broken on purpose" in printed
    assert "03_after.ipynb" in printed, "the notebooks after a failure still run"
    assert "total" in printed and "budgets (quick mode)" in printed
    figures = json.loads(out_json.read_text())
    by_name = {r["notebook"]: r for r in figures["notebooks"]}
    assert by_name["03_after.ipynb"]["peak_memory_mb"] > by_name["01_good.ipynb"]["peak_memory_mb"] + 40
    assert figures["failed"] == ["02_bad.ipynb"]
    assert figures["total_seconds"] > 0 and figures["max_peak_memory_mb"] > 50


def test_normal_mode_runs_with_quick_mode_off_and_reports_the_per_notebook_budgets(tmp_path, capsys, monkeypatch):
    import labkit.run_notebooks as rn

    normal = _notebook(tmp_path / "06_normal.ipynb",
                       "import os, time\nassert os.environ['LABKIT_QUICK'] == '0'\ntime.sleep(1.5)")
    training = _notebook(tmp_path / "08_training.ipynb", "import time\ntime.sleep(1.5)")
    skipped = _notebook(tmp_path / "09_skipped.ipynb", "raise ValueError('not selected, never run')")
    monkeypatch.setattr(rn, "NORMAL_BUDGET_S", 1)
    monkeypatch.setattr(rn, "TRAINING_BUDGET_S", 600)
    assert rn.normal_budget("08_training.ipynb") == 600 and rn.normal_budget("06_x.ipynb") == 1
    status = main([str(normal), str(training), str(skipped), "--normal", "--only", "6", "08"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "06_normal.ipynb" in printed and "08_training.ipynb" in printed and "09_skipped" not in printed
    assert "budgets (normal mode)" in printed and "budgets (quick mode)" not in printed
    over = [line for line in printed.splitlines() if "OVER" in line]
    assert any(line.startswith("06_normal.ipynb") for line in over), "06 took more than its (1 s) budget"
    assert not any(line.startswith("08_training.ipynb") for line in over), "08 has the training budget"


def test_only_names_the_notebooks_it_cannot_find(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--only", "77"])
    assert "no notebook starts with it" in capsys.readouterr().err
