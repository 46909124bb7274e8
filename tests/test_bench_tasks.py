"""The benchmark scripts of whole tasks run end to end, briefly (figures are not
asserted): apart from test_bench.py so that two workers can share them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MRPC, REPO
from test_bench import run_script


@pytest.mark.slow
def test_compare_tasks_runs_every_task_but_qa_on_both_sides(tmp_path: Path, monkeypatch) -> None:
    """One step a side (question answering: its own compare_qa test): each task's
    reference job builds, trains and scores, and the table has a row per task. The
    `defaults` setting: ft at its own choice, the reference in fp32 (the `bf16` setting
    on a CPU without native bf16 emulates it, ten times slower)."""
    pytest.importorskip("accelerate")
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from task_benches import TASKS

    out = tmp_path / "tasks.json"
    tasks = [name for name in TASKS if name != "qa"]
    args = ["--tasks", *tasks, "--settings", "defaults", "--steps", "1", "--batch-size", "4"]
    args += ["--max-eval", "8"]
    stdout = run_script("compare_tasks.py", *args, "--repeats", "1", "--json", str(out))
    results = json.loads(out.read_text())["results"]
    assert set(results) == set(tasks)
    for task in tasks:
        for side in ("ft", "hf"):
            (run,) = results[task]["defaults"]["runs"][side]
            # One batch of 4 (ft may draw an epoch's short last batch first).
            assert 1 <= run["train_samples"] <= 4 and run["train_seconds"] > 0, (task, side)
            assert run["metric"] is not None and run["metric"] >= 0, (task, side)
        assert results[task]["defaults"]["runs"]["hf"][0]["precision"] == "fp32", task
        assert f"| {task} | defaults |" in stdout


@pytest.mark.slow
def test_seeds_ensembles_on_the_tiny_model(tmp_path: Path) -> None:
    if not (MRPC.parent / "SST-2" / "train.tsv").is_file():
        pytest.skip("../shared/data/glue is absent")
    out = tmp_path / "seeds.json"
    stdout = run_script(
        "seeds_ensembles.py",
        "--tiny",
        "--quick",
        "--glue",
        str(MRPC.parent),
        "--tasks",
        "sst2",
        "--seeds",
        "1",
        "2",
        "--augment",  # none: the augmentations have tests of their own
        "--no-distill",
        "--out",
        str(tmp_path / "runs"),
        "--json",
        str(out),
    )
    record = json.loads(out.read_text())["results"]["sst2"]
    assert set(record["arms"]) == {"single runs"}
    assert record["arms"]["single runs"]["accuracy"]["n"] == 2
    assert set(record["ensembles"]) == {"mean", "vote", "weighted", "greedy", "stack"}
    assert "| sst2 | ensemble: greedy |" in stdout


@pytest.mark.slow
def test_compare_qa_on_the_tiny_model(tmp_path: Path) -> None:
    squad = MRPC.parent.parent / "squad"
    if not (squad / "train.json").is_file():
        pytest.skip("../shared/data/squad is absent")
    pytest.importorskip("accelerate")
    out = tmp_path / "qa.json"
    stdout = run_script(
        "compare_qa.py",
        # The packaged MiniLM, briefly: the tiny BERT's characters make SQuAD's questions
        # longer than its 128 positions.
        "--data",
        str(squad),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "8",
        "--max-length",
        "128",
        "--stride",
        "32",
        "--precision",
        "fp32",  # bf16 is emulated, ten times slower, on a CPU without native bf16
        "--json",
        str(out),
    )
    record = json.loads(out.read_text())
    for side in ("ft", "hf"):
        row = record["table"][side]
        assert 0 <= row["dev F1"] <= 1 and 0 <= row["dev exact match"] <= row["dev F1"]
        assert record["runs"][side][0]["train_windows"] == 2 * 4
    assert "ft vs the run_qa.py-style Trainer job" in stdout


@pytest.mark.slow
def test_long_documents_on_the_tiny_model(tmp_path: Path) -> None:
    sst2 = MRPC.parent / "SST-2"
    if not (sst2 / "train.tsv").is_file():
        pytest.skip("../shared/data/glue/SST-2 is absent")
    out = tmp_path / "long.json"
    stdout = run_script(
        "long_documents.py", "--tiny", "--quick", "--data", str(sst2), "--json", str(out)
    )
    table = json.loads(out.read_text())["table"]
    assert set(table) == {"truncate", "windows"}
    # The documents are longer than the window: reading them whole takes more rows.
    assert table["windows"]["train rows"] > table["truncate"]["train rows"] == 64
    assert all(0 <= row["dev accuracy (documents)"] <= 1 for row in table.values())
    assert "| windows |" in stdout
