"""What every task provides; the defaults serve tasks with one label per row of text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ft_cli.config.schema import DataConfig, ModelConfig, TaskConfig, window_stride
from ft_cli.data import token_cache
from ft_cli.data.batching import Collator
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks import documents

if TYPE_CHECKING:
    import datasets
    import torch

    from ft_cli.data.dataset import PreparedData, RawData
    from ft_cli.inputs.base import Modality
    from ft_cli.tasks.objective import Objective


class Task:
    """One task's part in data preparation, the model head, training and prediction."""

    name = ""
    uses_labels = True  # the data must have data.label_column
    replaces_head = False  # a checkpoint's head of another size is replaced, not refused
    named_labels = True  # the head predicts named classes (id2label in the export)
    word_lists = False  # a row's text may be a list of words (ft serve accepts one)
    confusion_matrix = False  # ft report plots one (a class per row)
    report_tables = False  # ft report shows report_table's rows
    report_figures = False  # ft report shows report_figure's picture
    # ft export: the model ends in one fixed-shape head a graph can return; else why not.
    exportable = True
    not_exported = "its output is not one fixed-shape head"
    pipeline_tag: str | None = "text-classification"  # the model card's, for the hub

    @property
    def inputs(self) -> Modality:
        """The task's input modality (`inputs.base.Modality`), as `tasks.TASKS` names it."""
        from ft_cli import tasks

        return tasks.modality(self.name)

    def processor(self, cfg: ModelConfig) -> Any:
        """What turns raw inputs into model inputs (the modality's: a tokenizer, ...)."""
        return self.inputs.processor(cfg)

    def same_inputs(self, processor: Any, other: Any) -> bool:
        """Whether two models' processors give the same inputs (a teacher reads the student's)."""
        return self.inputs.same_inputs(processor, other)

    def vocab_size(self, processor: Any) -> int:
        """Token ids the model must embed (a fresh model's embedding table)."""
        return self.inputs.vocab_size(processor)

    def check_inputs(self, cfg: ModelConfig, data: DataConfig) -> None:
        """Refuse data settings the model cannot read (before any data is loaded)."""
        self.inputs.check_model(cfg, data)

    def load_raw(self, cfg: DataConfig) -> RawData:
        """The untokenized splits (`dataset.RawData`)."""
        from ft_cli.data import dataset

        return dataset.load_raw(cfg)

    def load_file(self, path: str, cfg: DataConfig) -> datasets.Dataset:
        """One data file as a dataset (`ft eval --file`)."""
        from ft_cli.data import dataset

        return dataset.load_file(path, cfg)

    def input_columns(self, cfg: DataConfig) -> dict[str, str]:
        """{config key: column} of the columns every row must have besides its label."""
        return self.inputs.columns(cfg)

    def prepare(self, cfg: DataConfig, task: TaskConfig, tokenizer: Any, seed: int) -> PreparedData:
        """The run's data, checked and tokenized (`dataset.PreparedData`)."""
        from ft_cli.data import dataset

        return dataset.prepare(cfg, task, tokenizer, seed)

    def settle(self, task: TaskConfig, prepared: PreparedData, key: str = "task.") -> TaskConfig:
        """The task settings with what depends on the data filled in (class_weights=balanced)."""
        return task

    def build_model(
        self,
        cfg: ModelConfig,
        task: TaskConfig,
        labels: Any,
        vocab: int,
        dropout: float | None,
        meta: bool,
    ) -> tuple[nn.Module, set[str]]:
        """(the task model, the names of its parameters not from the checkpoint).

        `meta`: shapes only, on PyTorch's meta device (no weights read).
        """
        import torch

        from ft_cli.models import model

        auto_name = self.auto_class(task)
        if not meta:
            return model.load_model(
                cfg, task.kind, labels, vocab, dropout, auto_name, self.replaces_head
            )
        config, auto = model.model_config(cfg, task.kind, labels, vocab, dropout, auto_name)
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=cfg.trust_remote_code), set()

    def load_trained(
        self, cfg: ModelConfig, task: TaskConfig, labels: Any, vocab: int
    ) -> nn.Module:
        """The trained model `cfg.from_run` names, for evaluation and prediction."""
        from ft_cli.models import model

        return model.load_model(cfg, task.kind, labels, vocab)[0]

    def record(self, task: TaskConfig, labels: Any) -> dict[str, Any]:
        """What the run's metrics.json adds about the task (the class weights used)."""
        from ft_cli.tasks import class_weights

        weights = class_weights.by_label(task, labels)
        return {"class_weights": weights} if weights else {}

    def auto_class(self, task: TaskConfig) -> str | None:
        """The transformers Auto class of the model when the settings change it (else None)."""
        return None

    def save(
        self,
        net: nn.Module,
        tokenizer: Any,
        folder: Path,
        weights: dict[str, torch.Tensor] | None,
        task: TaskConfig,
        labels: Any,
    ) -> None:
        """Write the trained model as a transformers folder (`weights`: None = its own)."""
        net.save_pretrained(folder, state_dict=weights)
        tokenizer.save_pretrained(folder)

    def label_names(
        self,
        task: TaskConfig,
        cfg: DataConfig,
        train: datasets.Dataset,
        hub_names: list[str] | None,
    ) -> list[str] | None:
        """The label set in id order (None: the task has no classes)."""
        return None

    def check_labels(self, labels: list[str] | None, task: TaskConfig) -> None:
        """Refuse a label set the task cannot train on (before any split is encoded)."""

    def check_column(self, first: Any, key: str, column: str, split: str, source: str) -> None:
        """Refuse a column whose values have the wrong shape (its first row's value)."""
        self.inputs.check_column(first, key, column, split, source)

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: datasets.Dataset,
        labels: list[str] | None,
        split: str,
    ) -> EncodedSplit:
        """Tokenize the rows' text (and pair), cached, and attach their targets."""
        texts = [t if t is not None else "" for t in dataset[cfg.text_column]]
        pairs = None
        if cfg.text_pair_column is not None:
            pairs = [t if t is not None else "" for t in dataset[cfg.text_pair_column]]

        def tokenize() -> EncodedSplit:
            return documents.encode_texts(tokenizer, texts, pairs, cfg)

        how = f"rows|{cfg.max_length}"
        if documents.windowed(cfg):
            how += f"|windows of rows|{window_stride(cfg)}"
        key = token_cache.cache_key(tokenizer, [texts, pairs or []], how)
        encoded = token_cache.cached(key, cfg.cache, tokenize)
        if cfg.label_column in dataset.column_names:
            targets = self.targets(dataset[cfg.label_column], labels, split, cfg.label_column)
        else:
            targets = [-1] * len(texts)  # unlabelled test rows: predictions only
        encoded.labels = documents.spread(targets, encoded)
        return encoded

    def report_table(self, ready: Any) -> tuple[str, list[str], list[list[Any]]] | None:
        """`ft report`: a table of the task's own about the validation split ((title,
        header, rows); `ready`: the trained run's evaluation setup), or None."""
        return None

    def report_figure(self, ready: Any, path: Path, title: str) -> str | None:
        """`ft report`: a picture of the task's own about the validation split written to
        `path` (`ready`: the trained run's evaluation setup); its caption, or None."""
        return None

    def long_input_rows(self, cfg: DataConfig, tokenizer: Any) -> list[list[str]]:
        """What `ft explain` shows of the train split's long inputs: what truncation cuts,
        how many windows reading them whole makes (tasks scored over windows only)."""
        from ft_cli import tasks

        if not tasks.info(self.name).windowed:
            return []
        train = self.train_rows(cfg)
        texts = [t if t is not None else "" for t in train[cfg.text_column]]
        pairs = None
        if cfg.text_pair_column is not None:
            pairs = [t if t is not None else "" for t in train[cfg.text_pair_column]]
        return documents.length_rows(tokenizer, texts, pairs, cfg, words=False)

    def train_rows(self, cfg: DataConfig) -> datasets.Dataset:
        """The raw train split as a run reads it (data.max_train_samples applied)."""
        train = self.load_raw(cfg).splits["train"]
        if cfg.max_train_samples is not None:
            train = train.select(range(min(cfg.max_train_samples, len(train))))
        return train

    def targets(
        self, values: list[Any], labels: list[str] | None, split: str, column: str
    ) -> list[Any]:
        """The training target of each row's label value."""
        raise FtError(f"task={self.name} reads no label column")

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        """(model config values for the head, the transformers Auto class that builds it)."""
        assert labels is not None
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }, "AutoModelForSequenceClassification"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Objective:
        """The per-batch collator, forward, loss and metrics (`tasks.objective`)."""
        from ft_cli.tasks.objective import Objective

        num_labels = len(labels) if labels is not None else 1
        pad_id = tokenizer.pad_token_id or 0
        return Objective(
            net, self.name, num_labels, pad_id, compile_model, label_smoothing, task.class_weights
        )

    # Prediction (ft predict): rows of a file in, columns out.

    def request_columns(self, cfg: DataConfig) -> dict[str, str]:
        """{request role: column} of what a served request gives (the modality's)."""
        return self.inputs.request_columns(cfg)

    def predictions(self, predictor: Any, rows: list[dict]) -> list[dict[str, Any]]:
        """The prediction columns of each row (`commands.predict.Predictor` runs the model)."""
        logits, extras = predictor.logits(rows)
        return [
            self.prediction(row, predictor.labels, own, predictor.lists)
            for row, own in zip(logits, extras, strict=True)
        ]

    def check_predictable(self) -> None:
        """Refuse prediction where the task's model predicts no row-level output."""

    def predict_inputs(
        self,
        read: Callable[..., list[Any]],
        tokenizer: Any,
        cfg: DataConfig,
        labels: list[str] | None,
        task: TaskConfig | None = None,
    ) -> tuple[EncodedSplit, Any, Any]:
        """(the rows tokenized, their collator, what each row's prediction needs besides)."""
        texts = read("data.text_column", cfg.text_column)
        pairs = None
        if cfg.text_pair_column is not None:
            pairs = read("data.text_pair_column", cfg.text_pair_column)
        split = documents.encode_texts(tokenizer, texts, pairs, cfg)
        split.labels = [0] * len(split.input_ids)
        collate = Collator(split, tokenizer.pad_token_id or 0, regression=False)
        if split.rows is None:
            return split, collate, None
        return split, collate, [cfg.window_pooling.value] * len(split.input_ids)

    def pooled(self, logits: Any, extra: Any) -> torch.Tensor:
        """A row's logits: its own, or its windows' (a list) pooled as predict_inputs said."""
        if not isinstance(logits, list):
            return logits
        import torch

        return documents.pool(torch.stack(logits), extra[0][1])

    def prediction(
        self, logits: torch.Tensor, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        """The prediction columns of one row."""
        raise FtError(f"task={self.name} predicts no rows")

    def teacher_width(self, labels: list[str] | None) -> int:
        """How many outputs a distillation teacher's head must have (its num_labels)."""
        return int(self.head(labels)[0]["num_labels"])

    def soft_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """Distillation's soft term: KL(teacher || student) of their class distributions
        softened at `temperature`, times its square (the gradient's scale then does not
        depend on it)."""
        from torch.nn import functional as F

        t = temperature
        return (
            F.kl_div(
                F.log_softmax(student / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                log_target=True,
                reduction="batchmean",
            )
            * t
            * t
        )

    def ensemble_values(self, logits: torch.Tensor, length: int, width: int) -> torch.Tensor:
        """One row's output as an ensemble combines it ([K]): its class probabilities.
        (`length`: the row's tokens; `width`: the most any row of the batch has.)"""
        return logits.softmax(-1)

    def ensemble_logits(self, values: torch.Tensor) -> torch.Tensor:
        """Combined outputs [rows, K] back as the logits that metrics and predictions
        read (their softmax gives the probabilities again)."""
        return values.clamp_min(1e-12).log()
