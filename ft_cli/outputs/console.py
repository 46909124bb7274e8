"""What the user sees: a live progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class RunConsole:
    """Progress and tables for one run; no control characters when not on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.live = self.console.is_terminal
        self.total = 0
        self.first_step = 0
        self.progress: Progress | None = None
        self.task = None
        self.started = time.perf_counter()

    def info(self, message: str) -> None:
        self.console.print(message, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)

    def set_total(self, total_steps: int) -> None:
        self.total = total_steps

    def start(self, step: int = 0) -> None:
        """Start the clock and bar at `step` (non-zero when resuming)."""
        self.started = time.perf_counter()
        self.first_step = step
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(bar_width=24),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, completed=step, status="")

    def step(self, step: int, epoch: float, logs: dict[str, float] | None) -> None:
        """Advance to `step`; `logs` (loss, lr, samples/s) are given on log steps only."""
        if self.progress is not None:
            status = _format_logs(epoch, logs) if logs else None
            fields = {"status": status} if status else {}
            self.progress.update(self.task, completed=step, **fields)
        elif logs:
            elapsed = time.perf_counter() - self.started
            eta = elapsed / max(step - self.first_step, 1) * (self.total - step)
            self.console.print(
                f"step {step}/{self.total} {_format_logs(epoch, logs)}"
                f" elapsed {elapsed:.0f}s eta {eta:.0f}s",
                soft_wrap=True,
            )

    def metrics_table(self, title: str, metrics: dict[str, float], best: str | None = None) -> None:
        self.console.print(f"[bold]{title}[/]", soft_wrap=True)
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in metrics.items():
            marker = " *" if name == best else ""
            table.add_row(name + marker, f"{value:.4f}")
        self.console.print(table)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        """A titled table; every column after the first is right-aligned."""
        table = Table(title=title, title_justify="left")
        for index, column in enumerate(columns):
            justify = "left" if index == 0 else "right"
            table.add_column(column, justify=justify, overflow="fold")
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    def summary(self, rows: list[tuple[str, str]]) -> None:
        table = Table(title="run summary", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        for what, value in rows:
            table.add_row(what, value)
        self.console.print(table)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _format_logs(epoch: float, logs: dict[str, float]) -> str:
    parts = [f"epoch {epoch:.2f}"]
    if "loss" in logs:
        parts.append(f"loss {logs['loss']:.4f}")
    if "lr" in logs:
        parts.append(f"lr {logs['lr']:.2e}")
    if "samples_per_s" in logs:
        parts.append(f"{logs['samples_per_s']:.1f} samples/s")
    return " ".join(parts)
