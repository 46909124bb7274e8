"""TensorBoard event files under RUN_DIR/tensorboard (ft report reads them)."""

from __future__ import annotations

from dataclasses import dataclass

from ft_cli.loggers.base import RunInfo, RunLogger, setting


@dataclass
class Settings:
    enabled: bool = setting(
        False,
        "Event files in RUN_DIR/tensorboard (read by ft report); on in logger=tensorboard,"
        " the default option.",
    )


def open_logger(settings: Settings, info: RunInfo) -> RunLogger:
    return TensorBoardLogger(info)


class TensorBoardLogger(RunLogger):
    name = "tensorboard"

    def __init__(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops the events logged after its checkpoint.
        purge = info.resumed_step + 1 if info.resumed_step is not None else None
        self.folder = info.run_dir / "tensorboard"
        self.params = info.params  # the HPARAMS tab's columns, with the results
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=purge)

    def where(self) -> str:
        return f"tensorboard --logdir {self.folder}"

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)

    def results(self, values: dict[str, float], step: int) -> None:
        """Best and final metrics next to the flattened config: a sweep sorts by either in
        TensorBoard's HPARAMS tab (`tensorboard --logdir SWEEP_DIR`)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metric_tags = {f"hparam/{k.replace('/', '_')}": v for k, v in values.items()}
        experiment, session_start, session_end = hparams_summary(self.params, metric_tags)
        for summary in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metric_tags.items():
            self.writer.add_scalar(tag, value)

    def close(self, status: str) -> None:
        self.writer.close()
