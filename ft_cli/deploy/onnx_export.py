"""A trained model as ONNX (torch's exporter), checked against torch before it is kept.

The graph takes the task's model inputs (token ids, attention mask and token
types; or pixel values) with dynamic batch and sequence axes and returns the
logits. `int8` adds a copy whose weights onnxruntime's dynamic quantizer
stored as 8-bit integers. Both are run by onnxruntime over the run's
validation split next to the torch model in fp32: the largest logit
difference and the task's metrics of each are printed and recorded in
`onnx.json`, and an fp32 graph that strays more than `TOLERANCE` is refused.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ft_cli.deploy import export_folder
from ft_cli.errors import FtError
from ft_cli.models import outputs

TOLERANCE = 1e-3  # largest |logit difference| an fp32 export may have against torch
OPSET = 18
MODEL, INT8, RECORD = "model.onnx", "model.int8.onnx", export_folder.RECORD
INSTALL = "pip install 'ft-cli[onnx]' (onnx, onnxruntime, onnxscript)"
# Inputs whose second axis is the sequence (the others only batch).
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SOUND_INPUTS = ("input_values", "input_features")  # waveforms or spectrograms: [batch, time, ...]


BACKENDS = {"onnxruntime": MODEL, "onnxruntime-int8": INT8}  # ft predict --backend: its file


def default_folder(found: Any) -> Path:
    """Where `ft export` writes a trained model's graphs, and where `ft predict --backend
    onnxruntime` looks: RUN/onnx for the final model, RUN/onnx-TASK for one task of a
    multi-task run, RUN/onnx-step-N for a checkpoint (exports of different weights never
    share a folder)."""
    if found.checkpoint is not None:
        return found.home / f"onnx-{found.checkpoint.name}"
    return found.home / ("onnx" if found.task is None else f"onnx-{found.task}")


def load_session(found: Any, backend: str, labels: list[str] | None = None) -> SessionNet:
    """The exported graph a prediction backend runs, checked against its record and the
    weights it was made from."""
    require_onnx()
    folder = default_folder(found)
    path = folder / BACKENDS[backend]
    if not path.is_file():
        quantize = " --quantize int8" if backend.endswith("int8") else ""
        source = found.checkpoint if found.checkpoint is not None else found.home
        raise FtError(
            f"--backend {backend}: no {path.name} in {path.parent}; export it first with"
            f" ft export {source} --format onnx{quantize}"
        )
    record = export_folder.verify(folder, path.name, found)
    net = SessionNet(path, record.get("inputs"), None if labels is None else len(labels))
    net.config = _decision_config(folder)
    return net


def _decision_config(folder: Path) -> Any:
    """What prediction reads from the model's config beside the graph (a binary task's
    tuned decision threshold, `ft_threshold`)."""
    import json
    from types import SimpleNamespace

    path = folder / "config.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return SimpleNamespace(ft_threshold=saved.get("ft_threshold"))


def require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not importlib.util.find_spec(m)]
    if missing:
        raise FtError(f"ft export --format onnx needs {', '.join(missing)}: {INSTALL}")


class Logits(torch.nn.Module):
    """The model with named tensor inputs in a fixed order, returning its logits alone."""

    def __init__(self, net: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.net, self.names = net, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return outputs.logits_of(self.net(**dict(zip(self.names, inputs, strict=True))))


class SessionNet(torch.nn.Module):
    """An onnxruntime session that answers like a transformers model (`.logits`).

    `inputs`, `classes`: what the graph must take and return (its record's input names,
    the model's label count); a graph that differs is refused in one line.
    """

    def __init__(
        self, path: Path, inputs: list[str] | None = None, classes: int | None = None
    ) -> None:
        super().__init__()
        import onnxruntime

        self.path, self.classes = path, classes
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # a damaged or foreign file: onnxruntime's own reason
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise FtError(f"{path} is not a graph onnxruntime can load ({first[:200]})") from err
        self.names = [i.name for i in self.session.get_inputs()]
        if inputs is not None and self.names != list(inputs):
            raise FtError(
                f"{path} takes inputs {', '.join(self.names)}, but its record says"
                f" {', '.join(inputs)}; export the run again"
            )

    def forward(self, **batch: torch.Tensor) -> Any:
        from types import SimpleNamespace

        missing = [name for name in self.names if name not in batch]
        if missing:
            raise FtError(
                f"{self.path} takes {', '.join(missing)}, which this model's inputs lack"
                f" ({', '.join(batch)}): it is another task's graph; export the run again"
            )
        feed = {name: batch[name].cpu().numpy() for name in self.names}
        logits = torch.from_numpy(self.session.run(None, feed)[0])
        # Scores per class: on the last axis, or a class map's second ([rows, classes, h, w]).
        found = logits.shape[1] if logits.dim() == 4 else logits.shape[-1]
        if self.classes is not None and found != self.classes:
            raise FtError(
                f"{self.path} returns {found} scores per row, but the model has"
                f" {self.classes} labels: it is another model's graph; export the run again"
            )
        return SimpleNamespace(logits=logits)


@dataclass
class Check:
    """One variant's agreement with torch and its metrics over the checked rows."""

    max_diff: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def input_names(batch: dict[str, torch.Tensor]) -> list[str]:
    """The model inputs of a collated batch (targets and bookkeeping left out)."""
    return [
        k for k in batch if k not in ("labels", "word_starts", "row_index", "samples", "window")
    ]


def export_graph(
    net: torch.nn.Module, batch: dict[str, torch.Tensor], path: Path, opset: int
) -> list[str]:
    """Write the ONNX graph of `net` traced on `batch`; its input names."""
    names = input_names(batch)
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=2, max=8192)
    shapes = tuple(
        {0: batch_dim, 1: sequence} if n in SEQUENCE_INPUTS else {0: batch_dim} for n in names
    )
    if any(n in SOUND_INPUTS for n in names):
        # Clips: the batch and time axes vary; export finds their ranges (a model's
        # convolutions need a shortest clip) and ties a mask's length to its clip's.
        auto = torch.export.Dim.AUTO
        shapes = tuple({0: auto, 1: auto} for _ in names)
    with warnings.catch_warnings(), _quiet("torch.onnx"), _quiet("onnx_ir"):
        warnings.simplefilter("ignore")
        # One self-contained file (weights inside) for models under protobuf's 2 GB limit.
        torch.onnx.export(
            Logits(net, names).eval(),
            tuple(batch[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=(shapes,),
            verbose=False,
            external_data=False,
        )
    return names


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from a library's logger (`""`: the root logger) while inside."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # its advice to pre-process goes to the root logger
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def check(ready: Any, variants: dict[str, torch.nn.Module]) -> dict[str, Check]:
    """Each variant's largest logit difference from torch, and its metrics, over the rows."""
    objective = ready.objective
    own = {name: _with_forward(objective, net) for name, net in variants.items()}
    split = ready.loader.dataset
    scores = {name: objective.new_metrics(split) for name in ["torch", *variants]}
    found = {name: Check() for name in ["torch", *variants]}
    ready.forward.eval()
    with torch.no_grad():
        for batch in ready.loader:
            logits, targets = objective.outputs(dict(batch))
            scores["torch"].update(logits, targets)
            for name, other in own.items():
                theirs, _ = other.outputs(dict(batch))
                gap = float((theirs.float() - logits.float()).abs().max())
                found[name].max_diff = max(found[name].max_diff, gap)
                scores[name].update(theirs, targets)
    for name, score in scores.items():
        found[name].metrics = {k: float(v) for k, v in score.compute().items()}
    return found


def _with_forward(objective: Any, net: torch.nn.Module) -> Any:
    """The objective with another model behind it (its collators, loss and metrics kept)."""
    other = copy.copy(objective)
    other.forward = net
    return other


def export(
    ready: Any, target: Path, int8: bool, opset: int = OPSET, replace: bool = False
) -> dict[str, Any]:
    """Export, check and write `target` (model.onnx, [model.int8.onnx], onnx.json, the
    tokenizer and config); nothing is written when the check fails. `replace`: `target`
    holds an earlier export, replaced only once the new one is whole."""
    require_onnx()
    ready.forward.eval()
    sample = next(iter(ready.loader))
    weights = export_folder.weights_identity(ready.found)
    staging = export_folder.begin_staging(target)
    try:
        names = export_graph(ready.objective.forward, sample, staging / MODEL, opset)
        variants: dict[str, torch.nn.Module] = {"onnx fp32": SessionNet(staging / MODEL)}
        if int8:
            quantize_int8(staging / MODEL, staging / INT8)
            variants["onnx int8"] = SessionNet(staging / INT8)
        checks = check(ready, variants)
        gap = checks["onnx fp32"].max_diff
        if gap > TOLERANCE:
            raise FtError(
                f"the ONNX graph's logits differ from torch's by {gap:.2e} (more than"
                f" {TOLERANCE:g}) on the validation split; nothing written"
            )
        record = {
            "opset": opset,
            "inputs": names,
            "outputs": ["logits"],
            "task": ready.spec.task.kind,
            "labels": ready.labels,
            "weights": weights,
            "files": {"fp32": MODEL, **({"int8": INT8} if int8 else {})},
            "checked_rows": len(ready.rows),
            "checks": {name: vars(found) for name, found in checks.items()},
        }
        _write_companions(ready, staging)
        record = export_folder.seal(staging, record)
        export_folder.move_into_place(staging, target, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _write_companions(ready: Any, folder: Path) -> None:
    """What a reader of the graph needs: the tokenizer (or image processor) and the label map."""
    from ft_cli import tasks

    export = ready.found.export
    processor = tasks.get(ready.spec.task.kind).processor(ready.spec.model)
    processor.save_pretrained(folder)
    if export is not None and (export / "config.json").is_file():
        shutil.copy(export / "config.json", folder / "config.json")
