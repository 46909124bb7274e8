"""Guards around the loop: graceful interrupts, non-finite losses, out-of-memory errors."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import ClassVar

from ft_cli.errors import FtError


class RunInterrupted(BaseException):
    """Raised after SIGINT/SIGTERM once a checkpoint is committed.

    A BaseException, like KeyboardInterrupt, so that no `except Exception`
    (Hydra's job runner included) swallows it.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM


class StartupInterrupts:
    """Ctrl-C before the loop's guard is in place: at start-up, most of it spent importing.

    Python drops a KeyboardInterrupt raised inside some import-machinery callbacks
    ("Exception ignored in ..."), and start-up would carry on into training. The
    signal is therefore also recorded here, and the guard refuses to start a loop
    after one.
    """

    received: ClassVar[list[int]] = []

    @classmethod
    def install(cls) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, cls._handle)
            sys.unraisablehook = cls._quiet_unraisable

    @classmethod
    def _handle(cls, signum: int, _frame: FrameType | None) -> None:
        cls.received.append(signum)
        raise KeyboardInterrupt

    @staticmethod
    def _quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return  # recorded in `received`; its traceback is noise
        sys.__unraisablehook__(unraisable)


class InterruptGuard:
    """Turns the first SIGINT/SIGTERM into a request the loop honours at a step boundary.

    A second SIGINT aborts at once (KeyboardInterrupt); the last committed
    checkpoint is still intact because checkpoints are renamed into place.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> InterruptGuard:
        if StartupInterrupts.received:
            raise KeyboardInterrupt  # interrupted at start-up: no loop starts
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum
        name = signal.Signals(signum).name
        print(
            f"\n{name} received: finishing the current step and saving a checkpoint"
            " (press Ctrl-C again to abort at once)",
            flush=True,
        )


def nonfinite_error(step: int, epoch: float, value: float, last_checkpoint: str | None) -> FtError:
    kept = (
        f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
    )
    return FtError(
        f"non-finite loss ({value}) at step {step} (epoch {epoch:.2f}); try a lower"
        " optimizer.lr, hardware.precision=fp32, or train.max_grad_norm=1.0, or set"
        f" train.on_nonfinite=skip to skip such steps; {kept}"
    )


def oom_error(batch_size: int, shape: str, smaller: str, precision: str) -> FtError:
    """`shape`: what one row's input is (sequence length N, or an image's size); `smaller`:
    how to make it smaller (the task's objective says)."""
    # Half precision roughly halves activation memory: only worth suggesting from fp32.
    half = (
        ", or use hardware.precision=bf16 (fp16 on GPUs without bf16)"
        if precision == "fp32"
        else ""
    )
    return FtError(
        f"out of memory at train.batch_size={batch_size}, {shape}, precision {precision};"
        " lower train.batch_size (and raise train.grad_accum to keep the effective batch),"
        f" {smaller}{half}"
    )
