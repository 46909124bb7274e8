"""Console output: a live bar on a terminal, plain lines without control characters elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from ft_cli.outputs.console import RunConsole

LOGS = {"loss": 0.5, "lr": 1e-4, "samples_per_s": 12.5}


def drive(console: Console) -> RunConsole:
    ui = RunConsole(console=console)
    ui.set_total(4)
    ui.start()
    for step in range(1, 5):
        ui.step(step, step / 4, LOGS if step % 2 == 0 else None)
        if step == 2:
            ui.metrics_table("eval: step 2, epoch 0.50", {"accuracy": 0.75}, "accuracy")
    ui.stop()
    ui.summary([("status", "completed")])
    return ui


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    ui = drive(Console(file=out, force_terminal=False, width=120))
    text = out.getvalue()
    assert not ui.live
    assert "\x1b[" not in text and "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 2/4 epoch 0.50 loss 0.5000 lr 1.00e-04 12.5 samples/s")
    assert len(lines) == 2
    assert "accuracy *" in text and "completed" in text


def test_live_progress_on_a_terminal() -> None:
    out = io.StringIO()
    ui = drive(Console(file=out, force_terminal=True, width=120))
    text = out.getvalue()
    assert ui.live
    assert "4/4 steps" in text
    assert "loss 0.5000" in text
    assert "accuracy *" in text
