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
