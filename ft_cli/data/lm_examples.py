"""Text for a causal LM: documents or prompt/response examples made token rows.

A row holds the ids, each token's position in its own document (packing puts
several documents in one row: positions restart at each, which is how the model
tells them apart) and, for examples with a response, whether each token is one
the loss trains on. The collator turns these into next-token targets that never
cross from one document into the next.

- plain text: each document tokenized with the tokenizer's own special tokens
  and closed by its end-of-text token; `group_texts` joins them into one stream
  cut into rows of exactly `max_length` (only the short tail is dropped),
  `line_by_line` keeps one document a row, cut at `max_length`.
- prompt/response: the prompt tokenized as it is, the response after it without
  special tokens and closed by end-of-text; the loss reads the response only.
- messages: the conversation rendered with the chat template; the loss reads the
  assistant's turns, found as what each turn adds to the rendered text.

Examples are never cut by packing: `group_texts` packs whole examples into rows
of at most `max_length` (first fit, longest first); one longer than that loses
the start of its prompt, then the end of its response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ft_cli.errors import FtError

# ft's chat template for a tokenizer without one: a line per turn, "<|role|>" first,
# every turn closed by end-of-text (so generation stops where a turn ends).
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class Example:
    """One document or example: its ids and which of them the loss trains on (None: all)."""

    ids: list[int]
    trained: list[bool] | None = None


def plain_examples(tokenizer: Any, texts: list[str]) -> list[Example]:
    """Each document's ids with the tokenizer's special tokens, closed by end-of-text."""
    eos = tokenizer.eos_token_id
    examples = []
    for ids in tokenizer(texts)["input_ids"]:
        if eos is not None and (not ids or ids[-1] != eos):
            ids = [*ids, eos]
        examples.append(Example(ids))
    return examples


def prompt_ids(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Prompts as the model reads them before answering (the tokenizer's special tokens,
    no end-of-text): the same for training examples and for generation."""
    eos = tokenizer.eos_token_id
    rows = tokenizer(prompts)["input_ids"]
    return [ids[:-1] if ids and ids[-1] == eos and len(ids) > 1 else ids for ids in rows]


def pair_examples(tokenizer: Any, prompts: list[str], responses: list[str]) -> list[Example]:
    """Prompt then response (closed by end-of-text); the loss on the response only."""
    eos = tokenizer.eos_token_id
    answers = tokenizer(responses, add_special_tokens=False)["input_ids"]
    examples = []
    for asked, answer in zip(prompt_ids(tokenizer, prompts), answers, strict=True):
        answer = [*answer, eos] if eos is not None else list(answer)
        examples.append(Example([*asked, *answer], [False] * len(asked) + [True] * len(answer)))
    return examples


def chat_template(tokenizer: Any, given: str | None) -> str:
    """The template conversations are rendered with: the one given, else the tokenizer's,
    else ft's plain one."""
    return given or getattr(tokenizer, "chat_template", None) or PLAIN_CHAT_TEMPLATE


def render(tokenizer: Any, messages: list[dict], template: str, prompt: bool = False) -> str:
    """A conversation as text (`prompt`: followed by the assistant's turn opening)."""
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=prompt
    )


def chat_example(tokenizer: Any, messages: Any, template: str, where: str) -> Example:
    """A conversation rendered whole; the loss on the characters each assistant turn
    adds to the text before it (with the turn's closing tokens)."""
    messages = checked_messages(messages, where)
    text = render(tokenizer, messages, template)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:index], template, prompt=True) if index else ""
        upto = render(tokenizer, messages[: index + 1], template)
        if not (text.startswith(upto) and upto.startswith(before)):
            raise FtError(
                f"{where}: the chat template renders a turn differently once later turns"
                " follow, so the assistant's part cannot be found; set task.chat_template"
            )
        spans.append((len(before), len(upto)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    trained = [any(a <= start < b for a, b in spans) for start, _ in encoded["offset_mapping"]]
    return Example(list(encoded["input_ids"]), trained)


def checked_messages(messages: Any, where: str) -> list[dict]:
    """A conversation as a list of {role, content} strings; else one line naming the row."""
    if not isinstance(messages, list) or not messages:
        raise FtError(f"{where}: a conversation is a non-empty list of {{role, content}}")
    out = []
    for turn in messages:
        if not isinstance(turn, dict) or not {"role", "content"} <= set(turn):
            raise FtError(f"{where}: every turn needs a role and a content, got {turn!r:.60}")
        out.append({"role": str(turn["role"]), "content": str(turn["content"] or "")})
    return out


@dataclass
class TokenRows:
    """Rows of ids, each token's position in its document, and (None: every token) the
    tokens the loss trains on."""

    input_ids: list[list[int]]
    positions: list[list[int]]
    trained: list[list[bool]] | None
    cut: int = 0  # examples that lost tokens to max_length


def group_stream(examples: list[Example], max_length: int, split: str) -> TokenRows:
    """Documents joined and cut into rows of exactly `max_length`; a document cut by a row's
    end goes on at position 0 of the next (it cannot see its start there anyway)."""
    stream = [token for example in examples for token in example.ids]
    starts = [position for example in examples for position in range(len(example.ids))]
    rows = len(stream) // max_length
    if rows == 0:
        raise FtError(
            f"data: the {split} split has {len(stream)} tokens, fewer than one row of"
            f" data.max_length={max_length}; lower data.max_length or set"
            " task.packing=line_by_line"
        )
    ids, positions = [], []
    for row in range(rows):
        begin = row * max_length
        ids.append(stream[begin : begin + max_length])
        own = starts[begin : begin + max_length]
        carried = next((i for i, p in enumerate(own) if i and p == 0), len(own))
        positions.append([p - own[0] for p in own[:carried]] + own[carried:])
    return TokenRows(ids, positions, None)


def pack_examples(examples: list[Example], max_length: int) -> TokenRows:
    """Whole examples packed into rows of at most `max_length` tokens: longest first, each
    into the first row with room (first fit decreasing)."""
    fitted = [fit(example, max_length) for example in examples]
    order = sorted(range(len(fitted)), key=lambda i: -len(fitted[i].ids))
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        size = len(fitted[index].ids)
        row = next((r for r, left in enumerate(room) if left >= size), None)
        if row is None:
            rows.append([])
            room.append(max_length)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= size
    packed = TokenRows([], [], [], cut=sum(len(e.ids) > max_length for e in examples))
    for members in rows:
        chosen = [fitted[i] for i in members]
        packed.input_ids.append([t for e in chosen for t in e.ids])
        packed.positions.append([p for e in chosen for p in range(len(e.ids))])
        assert packed.trained is not None
        packed.trained.append([flag for e in chosen for flag in _flags(e)])
    return packed


def one_per_row(examples: list[Example], max_length: int) -> TokenRows:
    """An example a row, cut to `max_length` (an example: the start of its prompt first)."""
    fitted = [fit(example, max_length) for example in examples]
    has_flags = any(e.trained is not None for e in examples)
    return TokenRows(
        [e.ids for e in fitted],
        [list(range(len(e.ids))) for e in fitted],
        [_flags(e) for e in fitted] if has_flags else None,
        cut=sum(len(e.ids) > max_length for e in examples),
    )


def fit(example: Example, max_length: int) -> Example:
    """The example within `max_length`: a document's end cut; an example's prompt loses
    its start (after its first token, a begin-of-text one) before its response loses its end."""
    ids, trained = example.ids, example.trained
    if len(ids) <= max_length:
        return example
    if trained is None:
        return Example(ids[:max_length])
    prompt = trained.index(True) if True in trained else len(ids)
    drop = min(len(ids) - max_length, max(prompt - 1, 0))
    ids, trained = ids[:1] + ids[1 + drop :], trained[:1] + trained[1 + drop :]
    return Example(ids[:max_length], trained[:max_length])


def _flags(example: Example) -> list[bool]:
    return example.trained if example.trained is not None else [True] * len(example.ids)
