"""Causal language modelling (GPT-style, `AutoModelForCausalLM`): continued pretraining
on plain text, and supervised fine-tuning on prompt/response pairs or conversations
with the loss on the answers only (`data.lm_examples` makes the token rows).

Packed rows keep their documents apart: positions restart at each document and no
attention mask is passed, from which transformers builds a block-diagonal causal
mask (a token sees only its own document). A model that does not do so (checked
once with a tiny probe) is given a padding mask instead and warned about: its
documents then see the ones before them in a row, and the loss still never reads
across. Only the positions the loss reads go through the output layer.

Generation (`task.generation`) answers validation prompts at each evaluation
(exact match, token F1, ROUGE-L against the reference answer), and writes the
`generated` column of ft predict and the answers of ft serve.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.config.schema import DataConfig, Packing, TaskConfig, TextFormat
from ft_cli.data import corpus, lm_examples, token_cache
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError, warn
from ft_cli.tasks import answers, generation
from ft_cli.tasks.base import Task
from ft_cli.tasks.mlm import MaskedLMForward
from ft_cli.tasks.objective import Objective

GENERATED = "generated"  # ft predict's output column
REQUEST_LIMIT = "max_new_tokens"  # a row's (a request's) own cap on new tokens
REPORTED = 25  # ft report's rows of generated answers


def text_format(task: TaskConfig, cfg: DataConfig, columns: list[str]) -> TextFormat:
    """The kind of examples a split holds: task.text_format, or by its columns."""
    if task.text_format != TextFormat.auto:
        return task.text_format
    if cfg.messages_column in columns:
        return TextFormat.messages
    if cfg.prompt_column in columns and cfg.response_column in columns:
        return TextFormat.prompt_response
    return TextFormat.plain


def _needed(fmt: TextFormat, cfg: DataConfig) -> dict[str, str]:
    if fmt == TextFormat.messages:
        return {"data.messages_column": cfg.messages_column}
    if fmt == TextFormat.prompt_response:
        return {
            "data.prompt_column": cfg.prompt_column,
            "data.response_column": cfg.response_column,
        }
    return {"data.text_column": cfg.text_column}


def raw_texts(fmt: TextFormat, cfg: DataConfig, dataset: Any, split: str) -> list[Any]:
    """The split's columns the examples are made of (checked present), as given."""
    needed = _needed(fmt, cfg)
    for key, column in needed.items():
        if column not in dataset.column_names:
            raise FtError(
                f"{key}: column '{column}' is not in the {split} data (task.text_format="
                f"{fmt.value}); its columns are: {', '.join(dataset.column_names)}"
            )
    if fmt == TextFormat.plain:
        texts = corpus.documents(cfg, dataset)
        if not texts:
            raise FtError(
                f"data.text_column: the {split} split has no text in column"
                f" '{cfg.text_column}'; check the file or the column name"
            )
        return [texts]
    return [dataset[column] for column in needed.values()]


def examples(
    fmt: TextFormat, raw: list[Any], task: TaskConfig, tokenizer: Any, split: str
) -> list[lm_examples.Example]:
    if fmt == TextFormat.plain:
        return lm_examples.plain_examples(tokenizer, raw[0])
    if fmt == TextFormat.prompt_response:
        prompts, responses = ([str(v or "") for v in column] for column in raw)
        return lm_examples.pair_examples(tokenizer, prompts, responses)
    template = lm_examples.chat_template(tokenizer, task.chat_template)
    return [
        lm_examples.chat_example(tokenizer, row, template, f"{split} row {i}")
        for i, row in enumerate(raw[0])
    ]


class CausalLM(Task):
    name = "causal_lm"
    uses_labels = False
    named_labels = False
    exportable = False
    not_exported = (
        "it writes text token by token, a loop ONNX export does not run; serve it with"
        " ft serve (torch)"
    )
    pipeline_tag = "text-generation"
    report_tables = True  # ft report: generated answers against the references

    def input_columns(self, cfg: DataConfig) -> dict[str, str]:
        return {}  # which columns depends on the examples' format: checked by encode

    def report_table(self, ready: Any) -> tuple[str, list[str], list[list[Any]]] | None:
        """Validation prompts with their reference and generated answers, the wrong
        ones first (None where nothing is generated: plain text)."""
        scores = ready.objective.new_metrics(ready.loader.dataset)
        if scores.objective is None:
            return None
        ready.forward.eval()
        with torch.no_grad(), ready.hw.autocast():
            for batch in ready.loader:
                scores.update(*ready.forward({k: v.to(ready.hw.device) for k, v in batch.items()}))
        rows = [
            [prompt, truth, said, answers.exact_match(said, [truth])]
            for prompt, truth, said in zip(
                scores.prompts, scores.truth, scores.predicted, strict=True
            )
        ]
        rows.sort(key=lambda row: row[3])  # stable: the wrong ones first, in split order
        header = ["prompt", "reference", "generated", "exact match"]
        return "generated answers, validation (wrong ones first)", header, rows[:REPORTED]

    def settle(self, task: TaskConfig, prepared: Any, key: str = "task.") -> TaskConfig:
        found = getattr(prepared.train, "text_format", None)
        return dataclasses.replace(task, text_format=found) if found else task

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> EncodedSplit:
        fmt = text_format(task, cfg, list(dataset.column_names))
        # Answers are generated one example a row: evaluation rows are not packed.
        if fmt == TextFormat.plain:
            packed = task.packing == Packing.group_texts
        else:
            packed = task.pack_examples and split == "train"
        raw = raw_texts(fmt, cfg, dataset, split)

        def tokenize() -> EncodedSplit:
            found = examples(fmt, raw, task, tokenizer, split)
            if not packed:
                rows = lm_examples.one_per_row(found, cfg.max_length)
            elif fmt == TextFormat.plain:
                rows = lm_examples.group_stream(found, cfg.max_length, split)
            else:
                rows = lm_examples.pack_examples(found, cfg.max_length)
            if rows.cut:
                warn(
                    f"{rows.cut} of {len(found)} {split} examples are longer than"
                    f" data.max_length={cfg.max_length}: cut (a document at its end, an"
                    " example's prompt at its start first)"
                )
            return EncodedSplit(
                rows.input_ids,
                token_type_ids=None,
                labels=[],
                positions=rows.positions,
                trained=rows.trained,
            )

        chat = fmt == TextFormat.messages
        template = lm_examples.chat_template(tokenizer, task.chat_template) if chat else None
        how = f"causal_lm|{fmt.value}|{packed}|{cfg.max_length}|{template}"
        texts = [[json.dumps(v, sort_keys=True, default=str) for v in column] for column in raw]
        encoded = token_cache.cached(
            token_cache.cache_key(tokenizer, texts, how), cfg.cache, tokenize
        )
        encoded.labels = [0] * len(encoded)  # the next tokens are the targets
        encoded.text_format = fmt  # type: ignore[attr-defined]
        return encoded

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        return {}, "AutoModelForCausalLM"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return CausalLMObjective(net, task, tokenizer, compile_model)

    def save(
        self,
        net: nn.Module,
        tokenizer: Any,
        folder: Path,
        weights: dict[str, torch.Tensor] | None,
        task: TaskConfig,
        labels: Any,
    ) -> None:
        """The model with its generation settings; a chat model's tokenizer with the
        template its conversations were rendered with."""
        settings = task.generation
        config = net.generation_config
        config.max_new_tokens, config.num_beams = settings.max_new_tokens, settings.num_beams
        config.do_sample = settings.sample
        if settings.sample:
            config.temperature, config.top_p = settings.temperature, settings.top_p
            config.top_k = settings.top_k
        net.save_pretrained(folder, state_dict=weights)
        if task.text_format == TextFormat.messages:
            tokenizer.chat_template = lm_examples.chat_template(tokenizer, task.chat_template)
        tokenizer.save_pretrained(folder)

    def request_columns(self, cfg: DataConfig) -> dict[str, str]:
        return {"text": cfg.prompt_column}

    def predict_inputs(
        self,
        read: Any,
        tokenizer: Any,
        cfg: DataConfig,
        labels: list[str] | None,
        task: TaskConfig | None = None,
    ) -> tuple[Any, Any, Any]:
        """(each row's prompt ids, None, each row's cap on new tokens): a conversation
        from data.messages_column where the rows have it, else data.prompt_column."""
        assert task is not None
        settings = task.generation
        try:
            conversations = read("data.messages_column", cfg.messages_column, keep_lists=True)
        except FtError:
            conversations = None
        if conversations is not None:
            template = lm_examples.chat_template(tokenizer, task.chat_template)
            texts = [
                lm_examples.render(
                    tokenizer, lm_examples.checked_messages(c, f"row {i}"), template, True
                )
                for i, c in enumerate(conversations)
            ]
            prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
        else:
            prompts = lm_examples.prompt_ids(
                tokenizer, read("data.prompt_column", cfg.prompt_column)
            )
        try:
            asked = read(REQUEST_LIMIT, REQUEST_LIMIT, keep_lists=True)
        except FtError:
            asked = [""] * len(prompts)
        limits = [_limit(value, settings) for value in asked]
        return prompts, None, limits

    def predictions(self, predictor: Any, rows: list[dict]) -> list[dict[str, Any]]:
        """The text generated for each row, batched by prompt length."""

        def read(key: str, name: str, keep_lists: bool = False) -> list:
            return predictor._column(rows, key, name, keep_lists)

        spec = predictor.spec
        prompts, _, _ = self.predict_inputs(read, predictor.tokenizer, spec.data, None, spec.task)
        # Each row's own cap (requests batched together may differ in having one).
        limits = [_limit(row.get(REQUEST_LIMIT), spec.task.generation) for row in rows]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        texts: list[str] = [""] * len(prompts)
        with torch.no_grad(), predictor.hw.autocast():
            for start in range(0, len(order), predictor.batch):
                chosen = order[start : start + predictor.batch]
                written = generation.generate(
                    predictor.net,
                    predictor.tokenizer,
                    [prompts[i] for i in chosen],
                    spec.task.generation,
                    [limits[i] for i in chosen],
                )
                for index, text in zip(chosen, written, strict=True):
                    texts[index] = text
        return [{GENERATED: text} for text in texts]


def _limit(value: Any, settings: Any) -> int:
    """A row's own cap on new tokens (blank: task.generation.max_new_tokens)."""
    if value in ("", None):
        return settings.max_new_tokens
    cap = settings.request_max_new_tokens
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
        raise FtError(
            f"{REQUEST_LIMIT}: {value!r:.20} is not a whole number from 1 to {cap}"
            " (task.generation.request_max_new_tokens)"
        )
    return value


class CausalCollator:
    """Rows padded into a batch: ids, each token's position in its document (the padding
    its own document, after the row's), the flat positions the loss reads and their
    next-token targets (never the first token of another document)."""

    def __init__(self, split: EncodedSplit, pad_id: int, multiple: int, masked: bool) -> None:
        from ft_cli.data.batching import padded_width

        self.split, self.pad_id, self.multiple, self.masked = split, pad_id, multiple, masked
        self.cap = max(split.lengths(), default=0) if multiple > 1 else 0
        self.width = padded_width

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        split = self.split
        assert split.positions is not None
        longest = max(len(split.input_ids[i]) for i in indices)
        width = self.width(longest, self.multiple, self.cap)
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        positions = torch.arange(width).repeat(len(indices), 1)
        trained = torch.zeros((len(indices), width), dtype=torch.bool)
        lengths = torch.zeros(len(indices), dtype=torch.long)
        for j, i in enumerate(indices):
            row = split.input_ids[i]
            ids[j, : len(row)] = torch.tensor(row)
            positions[j, : len(row)] = torch.tensor(split.positions[i])
            positions[j, len(row) :] -= len(row)
            own = split.trained[i] if split.trained is not None else [True] * len(row)
            trained[j, : len(row)] = torch.tensor(own, dtype=torch.bool)
            lengths[j] = len(row)
        # Target of token t: token t + 1, when it continues t's document and is trained on.
        follows = positions[:, 1:] == positions[:, :-1] + 1
        real = torch.arange(width)[1:] < lengths[:, None]
        reads = torch.zeros_like(trained)
        reads[:, :-1] = follows & real & trained[:, 1:]
        flat = reads.view(-1).nonzero().squeeze(1)
        batch = {
            "input_ids": ids,
            "position_ids": positions,
            "target_positions": flat,
            "labels": ids[:, 1:].reshape(-1)[_next_index(flat, width)],
            "lengths": lengths,
        }
        if self.masked:  # a model that cannot keep packed documents apart: pad mask only
            batch["attention_mask"] = (torch.arange(width) < lengths[:, None]).long()
        return batch


def _next_index(flat: torch.Tensor, width: int) -> torch.Tensor:
    """Flat index into ids[:, 1:] of the token after each flat position of ids."""
    rows, cols = flat // width, flat % width
    return rows * (width - 1) + cols


class CausalForward(MaskedLMForward):
    """The output layer on the positions the loss reads only (without the model's cache)."""

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        targets, positions = batch.pop("labels"), batch.pop("target_positions")
        if self.split:
            hidden = self.body(**batch, use_cache=False)[0]
            selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
            return self.head(selected), targets
        logits = self.body(**batch, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1]).index_select(0, positions), targets


def keeps_documents_apart(net: nn.Module) -> bool:
    """Whether the model reads packed documents apart given restarting positions and no
    mask: the second of two documents in a row must come out as it does alone."""
    parameter = next(net.parameters(), None)
    if parameter is None or parameter.device.type == "meta":
        return True
    was_training = net.training
    net.eval()
    vocab = int(getattr(net.config, "vocab_size", 2))
    ids = torch.arange(6, device=parameter.device).remainder(vocab)[None]
    packed = torch.tensor([[0, 1, 2, 0, 1, 2]], device=parameter.device)
    try:
        with torch.no_grad():
            both = net(input_ids=ids, position_ids=packed, use_cache=False).logits[0, 3:]
            alone = net(input_ids=ids[:, 3:], position_ids=packed[:, :3], use_cache=False).logits
        return bool(torch.allclose(both.float(), alone[0].float(), atol=1e-4, rtol=1e-3))
    except (TypeError, ValueError, RuntimeError):
        return False
    finally:
        net.train(was_training)


class CausalLMObjective(Objective):
    """Next-token loss over the trained tokens; perplexity, and generated answers scored."""

    def __init__(
        self, net: nn.Module, task: TaskConfig, tokenizer: Any, compile_model: bool
    ) -> None:
        self.task, self.num_labels = task.kind, 0
        self.pad_id = tokenizer.pad_token_id or 0
        self.net, self.tokenizer, self.settings = net, tokenizer, task.generation
        self.masked = not keeps_documents_apart(net)
        if self.masked and (task.packing == Packing.group_texts or task.pack_examples):
            warn(
                f"{type(net).__name__} does not keep packed documents apart by their positions:"
                " a row's documents see the ones before them (the loss never reads across);"
                " task.packing=line_by_line (task.pack_examples=false) keeps one a row"
            )
        self.forward = CausalForward(net, compile_model)

    def collator(self, split: EncodedSplit, seed: int) -> Any:
        return CausalCollator(split, self.pad_id, self.pad_multiple, self.masked)

    def train_collator(self, split: Any, seed: int) -> Any:
        return self.collator(split, seed)

    def count(self, batch: dict[str, torch.Tensor]) -> tuple[int, int, int]:
        lengths = batch["lengths"]
        return len(lengths), int(lengths.sum()), batch["input_ids"].numel()

    def input_shape(self, batch: dict[str, torch.Tensor]) -> str:
        return f"sequence length {batch['input_ids'].shape[1]}"

    def outputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """(logits of the read positions [targets, vocabulary], (targets, their flat
        positions, the batch's ids): what finds each row's prompt and answer)."""
        batch.pop("lengths")
        ids, positions = batch["input_ids"], batch["target_positions"]
        logits, targets = self.forward(batch)
        return logits, (targets, positions, ids)

    def loss(self, logits: torch.Tensor, targets: Any) -> torch.Tensor:
        total = F.cross_entropy(logits.float(), targets[0], reduction="sum")
        return total / max(len(targets[0]), 1)

    def new_metrics(self, split: EncodedSplit | None = None) -> Any:
        answered = split is not None and split.trained is not None
        limit = self.settings.eval_rows if answered else 0
        return LanguageMetrics(self if limit != 0 else None, limit)


class LanguageMetrics(generation.GeneratedScores):
    """Loss and perplexity over the trained tokens; with an objective to generate with,
    each row's last answer generated from what comes before it and scored against it."""

    def update(self, logits: torch.Tensor, targets: Any) -> None:
        labels, positions, ids = targets
        self.add_loss(logits, labels)
        if self.room() != 0:
            self.answer(*last_answers(positions.cpu(), ids.cpu()))

    def compute(self) -> dict[str, float]:
        return self.scores(("rougeL",))


def last_answers(
    positions: torch.Tensor, ids: torch.Tensor
) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, answer ids) of each row with trained tokens: the answer is the row's
    last run of trained tokens, the prompt everything before it."""
    width = ids.shape[1]
    rows: dict[int, list[int]] = {}
    for flat in positions.tolist():
        rows.setdefault(flat // width, []).append(flat % width)
    prompts, replies = [], []
    for row, cols in rows.items():
        start = len(cols) - 1
        while start > 0 and cols[start - 1] == cols[start] - 1:
            start -= 1
        first, last = cols[start], cols[-1]
        prompts.append(ids[row, : first + 1].tolist())
        replies.append(ids[row, first + 1 : last + 2].tolist())
    return prompts, replies


TASK = CausalLM()
