"""labkit.train under `accelerate launch` with two processes on the CPU (DDP over gloo): it trains, only
process 0 writes, kill -9 + resume ends with the same weights as an uninterrupted run, and a NaN on one
process stops both and keeps the last good checkpoint."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file
from test_train import NAN_SCRIPT

from labkit.train import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["--preset", "smoke", "--device", "cpu", "--threads", "1", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out, *extra, script=None, processes=2):
    """`accelerate launch` with ``processes`` CPU processes (torchrun under --multi_gpu; gloo without GPUs)."""
    target = [str(script)] if script else ["-m", "labkit.train"]
    several = ["--multi_gpu"] if processes > 1 else ["--cpu"]  # --multi_gpu refuses a single process
    return [sys.executable, "-m", "accelerate.commands.launch", *several, "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), *target, *TRAIN, "--out", str(out), *extra]


def run(command, timeout=180):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def weights(run_dir):
    return load_file(str(Path(run_dir) / "model" / "diffusion_pytorch_model.safetensors"))


def test_two_processes_train_and_only_process_0_writes(tmp_path):
    done = run(launch(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: 12 steps") == 1  # printed by process 0 only
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"processes": 2' in summary
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 12 and state["processes"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.pt", "loss.png", "model", "summary.json", "wall_time.json"]


def test_accelerate_cpu_with_two_processes_trains_in_one_and_says_so(tmp_path):
    """The command a learner types first, `accelerate launch --cpu --num_processes 2 -m labkit.train ...`:
    Accelerate starts one CPU process without MPI; labkit trains, writes the run folder and says why."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "labkit.train", *TRAIN, "--out", str(tmp_path / "run")]
    done = run(command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("started ONE process") == 1 and done.stdout.count("done: 12 steps") == 1
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["processes"] == 1
    assert (tmp_path / "run" / "model" / "diffusion_pytorch_model.safetensors").is_file()


def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    assert run(launch(tmp_path / "run", "--steps", "3")).returncode == 0
    one = run([sys.executable, "-m", "labkit.train", *TRAIN, "--out", str(tmp_path / "run"), "--steps", "3"])
    assert one.returncode == 2 and "2 process(es), this one has 1" in one.stdout


def test_two_processes_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    straight = run(launch(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(launch(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    # kill -9 the launcher and every process under it (torchrun starts its workers in their own group).
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(tree) >= 3  # the launcher and two training processes at least
    time.sleep(1)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in tree[1:]), "a training process outlived kill -9"
    killed_at = load_checkpoint(ckpt)["step"]
    assert 0 < killed_at < 12 and not (out / "model").exists()

    resumed = run(launch(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {ckpt} at step {killed_at}" in resumed.stdout
    a, b = weights(tmp_path / "straight"), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_on_one_process_stops_both_and_keeps_the_last_good_checkpoint(tmp_path):
    script = tmp_path / "nan_at_7.py"
    script.write_text(NAN_SCRIPT.format(step=7))
    result = run(launch(tmp_path / "run", script=script))
    assert result.returncode != 0
    assert result.stdout.count("loss is nan at step 7") == 1, result.stdout + result.stderr[-2000:]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 6
    assert not (tmp_path / "run" / "checkpoint.pt.tmp").exists()


def test_two_micro_batches_in_one_process_equal_two_processes(tmp_path):
    """Gradient accumulation: one process with 2 micro-batches sees the same shards of each global batch as two
    processes with one each, so both runs end with the same weights (up to the order of float sums)."""
    accumulated = run(launch(tmp_path / "accumulated", "--steps", "3", "--batch-size", "4", "--grad-accum", "2",
                             processes=1))
    assert accumulated.returncode == 0, accumulated.stderr[-3000:]
    assert load_checkpoint(tmp_path / "accumulated" / "checkpoint.pt")["config"]["grad_accum"] == 2
    parallel = run(launch(tmp_path / "parallel", "--steps", "3", "--batch-size", "4"))
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    a, b = weights(tmp_path / "accumulated"), weights(tmp_path / "parallel")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    one_batch = run([sys.executable, "-m", "labkit.train", *TRAIN, "--out", str(tmp_path / "whole"), "--steps", "3",
                     "--batch-size", "4"])  # the whole batch in one shard is another draw: the test can fail
    assert one_batch.returncode == 0
    assert max((a[k] - weights(tmp_path / "whole")[k]).abs().max().item() for k in a) > 1e-4


def test_compare_processes_prints_one_row_per_process_count(tmp_path):
    from labkit.train import compare_processes

    table = compare_processes("smoke", tmp_path, (1, 2), ["--steps", "4"]).splitlines()
    assert table[0].startswith("| processes | threads each | images/s | clips/s |")
    rows = [[cell.strip() for cell in r.split("|")[1:-1]] for r in table[2:]]
    assert [int(r[0]) for r in rows] == [1, 2]
    for row, n in zip(rows, (1, 2)):  # each row is its own run's summary
        summary = json.loads((tmp_path / f"processes-{n}" / "summary.json").read_text())
        assert summary["processes"] == n and summary["steps"] == 4
        assert row[1:4] == [str(summary["threads"]), f"{summary['images_per_second']:.1f}",
                            f"{summary['clips_per_second']:.1f}" if summary["clips_per_second"] else "-"]
