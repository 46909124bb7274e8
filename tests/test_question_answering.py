"""Extractive question answering: SQuAD's answer scoring, windows over long contexts,
and the best answer across a question's windows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ft_cli.errors import FtError
from ft_cli.tasks import answers, windows

WORDS = ["cat", "dog", "sat", "on", "the", "mat", "park", "ball", "red", "runs", "a", "blue"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ft_cli.paths import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_bert", "model"))


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Cat!", "cat"),
        ("  An  apple, a day ", "apple day"),
        ("Theatre-goers", "theatregoers"),  # "the" inside a word stays
        ("1,000 (approx.)", "1000 approx"),
        ("", ""),
    ],
)
def test_answers_are_normalised_as_squad_does(text: str, normal: str) -> None:
    assert answers.normalize(text) == normal


def test_exact_match_and_f1_take_the_best_reference() -> None:
    assert answers.exact_match("the Eiffel Tower", ["Eiffel Tower"]) == 1.0
    assert answers.exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    # 1 common token of 3 guessed and 1 expected: precision 1/3, recall 1, F1 0.5.
    assert answers.token_f1("in Paris France", ["Paris"]) == pytest.approx(0.5)
    assert answers.token_f1("Paris", ["London", "paris."]) == 1.0
    assert answers.token_f1("red red ball", ["red ball"]) == pytest.approx(0.8)


def test_unanswerable_questions_are_right_only_when_left_empty() -> None:
    assert answers.exact_match("", []) == 1.0 and answers.token_f1("", []) == 1.0
    assert answers.exact_match("the mat", []) == 0.0 and answers.token_f1("mat", [""]) == 0.0
    assert answers.token_f1("", ["mat"]) == 0.0
    scores = answers.AnswerScores()
    scores.add("the mat", ["mat"])  # right
    scores.add("dog", ["cat"])  # wrong
    scores.add("", [])  # unanswerable, left empty: right
    out = scores.compute()
    assert out["exact_match"] == pytest.approx(2 / 3) and out["f1"] == pytest.approx(2 / 3)
    assert out["has_ans_exact_match"] == 0.5 and out["no_ans_exact_match"] == 1.0
    plain = answers.AnswerScores()
    plain.add("cat", ["cat"])
    assert set(plain.compute()) == {"exact_match", "f1"}  # no v2 parts without v2 data


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=3, max_size=60),
    where=st.tuples(st.integers(0, 59), st.integers(1, 4)),
    max_length=st.integers(24, 64),
    stride=st.integers(0, 8),
)
def test_answer_spans_round_trip_through_every_window(
    tokenizer, words: list[str], where: tuple[int, int], max_length: int, stride: int
) -> None:
    first = min(where[0], len(words) - 1)
    last = min(first + where[1], len(words))
    context = " ".join(words)
    begin = len(" ".join(words[:first])) + (1 if first else 0)
    text = " ".join(words[first:last])
    assert context[begin : begin + len(text)] == text
    made = windows.make_windows(
        tokenizer, ["where is it"], [context], max_length, stride, [(begin, begin + len(text))]
    )
    covered = set()
    for ids, spans, start, end in zip(
        made.input_ids, made.offsets, made.starts, made.ends, strict=True
    ):
        assert len(ids) <= max_length
        inside = [span for span in spans if span is not None]
        covered.update(c for span in inside for c in range(*span))
        holds = inside[0][0] <= begin and inside[-1][1] >= begin + len(text)
        if holds:  # the answer's tokens give back exactly its characters
            assert 0 < start <= end
            assert context[spans[start][0] : spans[end][1]] == text
        else:  # [CLS]: no answer in this window
            assert (start, end) == (0, 0)
    assert covered == {i for i, ch in enumerate(context) if not ch.isspace()}
    answer_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if answer_tokens <= stride:  # the overlap is wide enough: some window holds it whole
        assert any(made.starts)


def test_the_best_span_is_taken_across_windows() -> None:
    context = "the cat sat on the mat"
    # Two windows of the same question: tokens of "cat sat" in the first, "the mat" in the
    # second (offsets into the context; None for question and special tokens).
    first = [None, (4, 7), (8, 11), (12, 14), None]
    second = [None, (12, 14), (15, 18), (19, 22), None]
    scored = [
        ([5.0, 2.0, 1.0, 0.0, 0.0], [5.0, 0.0, 2.5, 0.0, 0.0], first),  # "cat sat": 4.5
        ([1.0, 0.0, 3.0, 0.0, 0.0], [1.0, 0.0, 0.0, 3.0, 0.0], second),  # "the mat": 6.0
    ]
    best = windows.best_answer(context, scored)
    assert (best.text, best.start, best.end, best.score) == ("the mat", 15, 22, 6.0)
    # One token at most: "sat" (start 1.0 + end 2.5) beats "the" and "mat" (3.0 each).
    single = windows.best_answer(context, scored, max_answer_length=1)
    assert (single.text, single.score) == ("sat", 3.5)
    assert windows.null_score(scored) == 2.0  # [CLS] + [CLS], the lowest over the windows


def test_a_window_too_small_for_its_overlap_or_question_is_one_line(tokenizer) -> None:
    context = "the cat sat on the mat " * 10
    with pytest.raises(FtError, match=r"^data.stride=20 must be smaller than") as caught:
        windows.make_windows(tokenizer, ["where"], [context], 24, 20)
    assert "\n" not in str(caught.value)
    with pytest.raises(FtError, match=r"^data.max_length=16: question 0 is .* longer than"):
        windows.make_windows(tokenizer, ["where did the dog run today"], [context], 16, 2)


def _squad(path, questions: list[dict]) -> str:
    import json

    article = {
        "title": "T",
        "paragraphs": [{"context": "the cat sat on the mat", "qas": questions}],
    }
    path.write_text(json.dumps({"version": "1.1", "data": [article]}))
    return str(path)


def test_squad_json_reads_as_a_row_per_question(tmp_path) -> None:
    from conftest import REPO

    from ft_cli.config.schema import DataConfig
    from ft_cli.data import formats

    cfg = DataConfig()
    path = _squad(
        tmp_path / "train.json",
        [
            {"id": "q1", "question": "who sat?", "answers": [{"text": "cat", "answer_start": 4}]},
            {"id": "q2", "question": "where?", "is_impossible": True, "answers": []},
        ],
    )
    rows = formats.FORMATS["squad"].load(path, cfg)
    assert rows["id"] == ["q1", "q2"] and rows["context"][0] == "the cat sat on the mat"
    assert rows["answers"][0] == {"text": ["cat"], "answer_start": [4]}
    assert rows["answers"][1] == {"text": [], "answer_start": []}  # unanswerable (v2)
    (tmp_path / "bad.json").write_text('{"data": [{"title": "T"}]}')
    with pytest.raises(
        FtError, match=r"^data.files: '.*bad.json' is not SQuAD JSON \(no 'paragraphs'\)"
    ):
        formats.FORMATS["squad"].load(str(tmp_path / "bad.json"), cfg)
    dev = REPO.parent / "shared" / "data" / "squad" / "dev.json"
    if dev.is_file():  # the shared part of SQuAD v1.1: its README counts 721 questions
        assert len(formats.FORMATS["squad"].load(str(dev), cfg)) == 721


def test_the_no_answer_threshold_is_tuned_for_the_best_f1() -> None:
    # Three questions: two answerable whose spans are right, one unanswerable whose span is
    # wrong. A question is left empty when its diff (no-answer score less the best span's)
    # is above the threshold. Diffs 1.0, -2.0, 0.5: emptying the unanswerable one (0.5)
    # would empty the first (1.0) too, so answering all (F1 2/3) is best.
    texts, references = ["cat", "mat", "dog"], [["cat"], ["the mat"], []]
    assert answers.best_threshold([1.0, -2.0, 0.5], texts, references) == 1.0
    # With the unanswerable question's diff the largest, emptying it alone is best: the
    # threshold is the next diff down, which leaves that question answered.
    threshold = answers.best_threshold([0.2, -2.0, 3.0], texts, references)
    assert threshold == 0.2
    out = answers.score_answers(texts, [0.2, -2.0, 3.0], references, None)
    assert out["f1"] == 1.0 and out["no_ans_f1"] == 1.0 and out["null_threshold"] == threshold
    # A threshold set by the user is used as it is.
    fixed = answers.score_answers(texts, [0.2, -2.0, 3.0], references, 5.0)
    assert fixed["f1"] == pytest.approx(2 / 3) and "null_threshold" not in fixed
    # Without unanswerable questions nothing is tuned and every question is answered.
    plain = answers.score_answers(["cat"], [9.0], [["cat"]], None)
    assert plain == {"exact_match": 1.0, "f1": 1.0}


def _answers_table(tmp_path, rows: list[dict]) -> str:
    import json

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    ("answer", "start", "message"),
    [
        (
            "mat",
            4,
            r"^data.answer_start_column: row 0 of the train data: the answer 'mat' is not at its"
            r" answer_start 4"
            r" \(the context has it at 19\); fix answer_start$",
        ),
        (
            "dog",
            4,
            r"^data.label_column: row 0 of the train data: its context does not contain"
            r" its answer 'dog'; fix the answer or the context$",
        ),
    ],
)
def test_an_answer_not_where_it_says_is_one_line(tmp_path, answer, start, message) -> None:
    from conftest import TINY, compose_spec

    from ft_cli.training.engine import train

    rows = [{"q": "what?", "c": "the cat sat on the mat", "a": answer, "s": start}] * 4
    spec = compose_spec(
        [
            "task=question_answering",
            "data=json",
            *TINY,
            f"data.files.train={_answers_table(tmp_path, rows)}",
            "data.text_column=q",
            "data.text_pair_column=c",
            "data.label_column=a",
            "data.answer_start_column=s",
        ]
    )
    with pytest.raises(FtError, match=message):
        train(spec, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("checkpoints/*"))


def test_a_question_answering_run_needs_its_context_column(tmp_path) -> None:
    from conftest import TINY, compose_spec

    from ft_cli.training.engine import train

    rows = [{"q": "what?", "c": "the cat", "a": "cat", "s": 4}] * 4
    spec = compose_spec(
        [
            "task=question_answering",
            "data=json",
            *TINY,
            f"data.files.train={_answers_table(tmp_path, rows)}",
            "data.text_column=q",
            "data.label_column=a",
            "data.answer_start_column=s",
        ]
    )
    with pytest.raises(FtError, match=r"^data.text_pair_column: task=question_answering reads"):
        train(spec, run_dir=tmp_path / "run")


QA_TINY = ["task=question_answering", "data=demo_qa", "data.max_length=128", "data.stride=32"]


@pytest.fixture(scope="module")
def trained_qa(tmp_path_factory) -> str:
    """A tiny model trained a few steps on the demo questions (windows of 128 tokens)."""
    from conftest import TINY

    from ft_cli import cli

    run = tmp_path_factory.mktemp("qa") / "run"
    overrides = [*TINY, *QA_TINY, "train.max_steps=6", f"hydra.run.dir={run}"]
    assert cli.run_train(overrides) == 0
    return str(run)


def _questions(folder: Path) -> tuple[list[dict], Path]:
    """Two questions, one with a context long enough for several windows, as jsonl."""
    import json

    context = "Anna Smith works for Acme Corp in Oslo. " * 12
    rows = [
        {"question": "Who does Anna Smith work for?", "context": context},
        {"question": "Where does Ben work?", "context": "Ben works for Vertex in Lima."},
    ]
    source = folder / "questions.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows, source


@pytest.mark.slow
def test_eval_predict_and_the_onnx_export_agree_on_every_answer(trained_qa, tmp_path) -> None:
    import json

    from ft_cli import cli

    record = json.loads((Path(trained_qa) / "metrics.json").read_text())
    assert {"f1", "exact_match", "loss"} <= set(record["best"])
    # ft eval scores the validation questions as the run's evaluation of its export did.
    assert cli._run_tool("eval", [trained_qa]) == 0
    again = json.loads((Path(trained_qa) / "eval_metrics.json").read_text())["metrics"]
    for name in ("f1", "exact_match", "loss"):
        assert again[name] == pytest.approx(record["best"][name], abs=1e-6), name
    # ft predict: an answer per question, the context's own characters; a long context
    # (several windows) answered once.
    rows, source = _questions(tmp_path)
    outputs = {}
    assert cli._run_tool("export", [trained_qa]) == 0
    for backend in ("torch", "onnxruntime"):
        target = tmp_path / f"{backend}.jsonl"
        args = [trained_qa, "--input", str(source), "--output", str(target)]
        assert cli._run_tool("predict", [*args, "--backend", backend]) == 0
        outputs[backend] = [json.loads(line) for line in target.read_text().splitlines()]
    for row, out in zip(rows, outputs["torch"], strict=True):
        assert out["answer"] == row["context"][out["answer_start"] : out["answer_end"]]
        assert out["answer"].strip()
    for mine, theirs in zip(outputs["torch"], outputs["onnxruntime"], strict=True):
        assert (mine["answer"], mine["answer_start"]) == (theirs["answer"], theirs["answer_start"])
        assert mine["answer_score"] == pytest.approx(theirs["answer_score"], abs=1e-3)


def test_predict_decodes_with_the_runs_answer_length_and_null_threshold() -> None:
    import torch

    from ft_cli.config.schema import TaskSettings
    from ft_cli.tasks.question_answering import TASK, Decoding

    context = "cat sat mat"
    spans = [None, (0, 3), (4, 7), (8, 11), None]
    logits = [torch.tensor([[5.0, 5.0], [0.0, 0.0], [3.0, 1.0], [1.0, 4.0], [0.0, 0.0]])]

    def predict(**settings) -> dict:
        decoding = Decoding.of(TaskSettings(kind="question_answering", **settings))
        return TASK.prediction(logits, None, [(None, (context, spans, decoding))], False)

    found = predict()
    assert (found["answer"], found["answer_score"]) == ("sat mat", 7.0)
    assert found["no_answer_margin"] == 3.0  # [CLS] at both ends: 10
    assert predict(max_answer_length=1)["answer"] == "mat"  # 1 + 4 beats 3 + 1
    assert predict(null_threshold=5.0)["answer"] == "sat mat"
    empty = predict(null_threshold=2.0)
    assert (empty["answer"], empty["answer_start"], empty["answer_end"]) == ("", -1, -1)


@pytest.mark.slow
def test_ft_serve_answers_question_and_context_as_ft_predict_does(trained_qa, tmp_path) -> None:
    import json

    from starlette.testclient import TestClient

    from ft_cli import cli
    from ft_cli.commands import serve
    from ft_cli.deploy import serving

    served, _ = serve.load(trained_qa, None, None, [], 8)
    row = {"question": "Who does Anna Smith work for?", "context": "Anna Smith works for Acme."}
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps(row) + "\n")
    assert (
        cli._run_tool("predict", [trained_qa, "--input", str(source), "--output", str(target)]) == 0
    )
    predicted = json.loads(target.read_text())
    with TestClient(serving.build_app(served, serving.Limits())) as client:
        answered = client.post("/predict", json=row)
        assert answered.status_code == 200, answered.text
        found = answered.json()["prediction"]
        assert (found["answer"], found["answer_start"]) == (
            predicted["answer"],
            predicted["answer_start"],
        )
        both = client.post("/predict", json={**row, "text": "again"})
        assert both.status_code == 422 and "send question or text, not both" in both.text
        # The modality's own names still work, and the server keeps serving.
        plain = client.post("/predict", json={"text": row["question"], "text_pair": row["context"]})
        assert plain.json()["prediction"]["answer"] == predicted["answer"]


@pytest.mark.slow
def test_report_lists_the_worst_answered_questions_lowest_f1_first(trained_qa) -> None:
    from ft_cli.commands import report
    from ft_cli.tasks import answers

    title, header, rows = report.task_table(Path(trained_qa))
    assert title.startswith("worst-answered questions") and header[0] == "question"
    assert 0 < len(rows) <= 20
    f1s = [row[3] for row in rows]
    assert f1s == sorted(f1s)
    for question, answer, references, f1, exact in rows:
        assert question.strip() and f1 == answers.token_f1(answer, references.split(" | "))
        assert exact <= f1
    page = report.write_report(Path(trained_qa)).read_text()
    assert "worst-answered questions, validation" in page


def _window_outputs(run: str) -> tuple[Any, dict[int, tuple]]:
    """The run's validation windows through ft eval's own setup: a fresh AnswerMetrics,
    and each window's (start and end logits, targets)."""
    import torch

    from ft_cli.training import evaluating

    ready = evaluating.setup(run, [])
    found = {}
    ready.forward.eval()
    with torch.no_grad():
        for batch in ready.loader:
            logits, targets = ready.forward(batch)
            for row, target in zip(logits, targets, strict=True):
                window = int(target[2])
                found[window] = (row[: len(ready.rows.input_ids[window])], target)
    return ready.objective.new_metrics(ready.rows), found


@pytest.mark.slow
def test_an_ensemble_averages_start_and_end_logits_in_eval_and_predict(
    trained_qa, tmp_path, capsys
) -> None:
    import json

    from conftest import TINY

    from ft_cli import cli

    other = str(tmp_path / "other")
    seeded = [*TINY, *QA_TINY, "train.max_steps=6", "train.seed=7", "optimizer.lr=1e-3"]
    assert cli.run_train([*seeded, f"hydra.run.dir={other}"]) == 0
    # The ensemble: each window's start and end logits averaged, then decoded and scored.
    expected, first = _window_outputs(trained_qa)
    _, second = _window_outputs(other)
    assert first.keys() == second.keys()
    for window, (logits, target) in first.items():
        expected.update(((logits + second[window][0]) / 2)[None], target[None])
    wanted = expected.compute()
    folder = tmp_path / "ensemble"
    assert (
        cli._run_tool("ensemble", [trained_qa, other, "--method", "mean", "--output", str(folder)])
        == 0
    )
    assert cli._run_tool("eval", [str(folder)]) == 0
    scored = json.loads((folder / "ensemble_metrics.json").read_text())["models"]
    assert [row["fit"] for row in scored] == ["member", "member", "-"]
    alone = json.loads((Path(trained_qa) / "metrics.json").read_text())["best"]
    for name in ("f1", "exact_match", "loss"):
        assert scored[0]["metrics"][name] == pytest.approx(alone[name], abs=1e-6), name
    # The loss of the averaged logits differs from each member's: no member stands in.
    for name in ("f1", "exact_match", "loss"):
        assert scored[2]["metrics"][name] == pytest.approx(wanted[name], rel=1e-6), name
    assert all(row["metrics"]["loss"] != pytest.approx(wanted["loss"]) for row in scored[:2])
    # A vote or a meta-model over token positions is refused in one line; `all` is the
    # methods the task takes.
    capsys.readouterr()
    assert cli._run_tool("eval", [trained_qa, other, "--ensemble", "stack"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ft: error: ft eval: --ensemble stack: task question_answering combines its runs with"
        " mean, weighted, greedy"
    )
    assert cli._run_tool("eval", [trained_qa, other, "--ensemble", "all"]) == 0
    assert "ensemble: greedy" in capsys.readouterr().out
    # ft predict with the ensemble: a long context's windows combined one by one; an
    # ensemble of a run with itself answers exactly as the run does.
    rows, source = _questions(tmp_path)

    def predicted(*args: str) -> list[dict]:
        target = tmp_path / "out.jsonl"
        assert (
            cli._run_tool("predict", [*args, "--input", str(source), "--output", str(target)]) == 0
        )
        return [json.loads(line) for line in target.read_text().splitlines()]

    for row, out in zip(rows, predicted(str(folder)), strict=True):
        assert out["answer"] == row["context"][out["answer_start"] : out["answer_end"]]
    alone = predicted(trained_qa)
    twice = predicted(trained_qa, trained_qa, "--ensemble", "mean")
    for mine, theirs in zip(alone, twice, strict=True):
        assert (mine["answer"], mine["answer_start"]) == (theirs["answer"], theirs["answer_start"])
        assert mine["answer_score"] == pytest.approx(theirs["answer_score"], abs=1e-5)
    # Members that read the contexts in other windows are refused in one line.
    strided = str(tmp_path / "strided")
    settings = [o for o in QA_TINY if not o.startswith("data.stride=")]
    once = [*TINY, *settings, "data.stride=16", "train.max_steps=1"]
    assert cli.run_train([*once, f"hydra.run.dir={strided}"]) == 0
    capsys.readouterr()
    assert cli._run_tool("eval", [trained_qa, strided, "--ensemble", "mean"]) == 2
    err = capsys.readouterr().err
    assert "rows differ from" in err and "data.stride" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_distillation_moves_a_students_spans_toward_the_teachers(tmp_path) -> None:
    """alpha = 1: the student learns the teacher's start and end distributions alone, for
    several epochs (the teacher's logits kept per window, padded to each new batch)."""
    import torch
    from conftest import TINY
    from torch.nn import functional as F

    from ft_cli import cli

    def run(name: str, *extra: str) -> str:
        folder = str(tmp_path / name)
        assert cli.run_train([*TINY, *QA_TINY, *extra, f"hydra.run.dir={folder}"]) == 0
        return folder

    teacher = run("teacher", "train.max_steps=16", "optimizer.lr=3e-3")
    distill = ["strategy=distill", f"strategy.teacher.from_run={teacher}", "train.seed=5"]
    distill += ["strategy.distill_alpha=1.0", "train.epochs=3", "train.eval_every=1000"]
    before = run("before", *distill, "optimizer.lr=1e-12")  # the student as initialised
    after = run("after", *distill, "optimizer.lr=3e-3")
    assert json.loads((Path(after) / "metrics.json").read_text())["steps"] > 16
    _, taught = _window_outputs(teacher)

    def gap(student: str) -> float:
        _, own = _window_outputs(student)
        total = 0.0
        for window, (logits, _) in taught.items():
            for end in (0, 1):
                t = F.log_softmax(logits[:, end], -1)
                s = F.log_softmax(own[window][0][:, end], -1)
                total += float(F.kl_div(s, t, log_target=True, reduction="sum"))
        return total / len(taught)

    with torch.no_grad():
        assert gap(after) < 0.5 * gap(before), (gap(after), gap(before))
