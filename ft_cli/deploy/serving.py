"""The HTTP side of `ft serve`: the FastAPI app, its request checks and the batching queue.

Requests are checked and turned into rows (the run's input columns) as they
arrive, and each request's rows are encoded on their own (`Served.check`)
before they may join a batch, so an input the tokenizer or image decoder
refuses gets its own 4xx and never reaches its neighbours. Rows wait in one
queue, and a single worker takes whatever is there, up to `max_batch` rows or
`max_wait` seconds after the first, and runs the predictor on them together in
a thread, so the event loop keeps answering `/health` meanwhile; a batch that
still fails is retried request by request. Each request gets back its own
rows' predictions, the columns `ft predict` writes.

A request must arrive whole within `read_timeout` seconds: its headers (see
`HeaderDeadline`) and its body, which is read in chunks and refused past
`max_body` bytes whether or not it declared its length. Every refusal and
failure answers `{"error": one line}`.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations
# (Request, defined inside build_app) as objects.
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ft_cli import inputs, tasks
from ft_cli.errors import FtError
from ft_cli.inputs.base import Modality, RequestError, Rows, kind_of


@dataclass(frozen=True)
class Limits:
    max_batch: int = 32  # rows predicted together
    max_wait: float = 0.005  # seconds the first queued request waits for company
    max_items: int = 64  # texts (or pairs, or rows) in one request
    max_chars: int = 10_000  # characters in one text
    max_body: int = 1_000_000  # bytes in one request body
    max_pixels: int = 40_000_000  # pixels in one image (width x height)
    read_timeout: float = 10.0  # seconds a request's headers and body may take to arrive


@dataclass(frozen=True)
class Served:
    """What the server predicts with and says about itself."""

    predict: Callable[[Rows], Rows]  # rows in, prediction columns out (in order)
    columns: dict[str, str]  # {request role: column}, as the modality names them
    info: dict[str, Any]  # GET /info: task, labels, backend, model card, ...
    inputs: Modality  # what a request's rows are: it reads and checks the body
    check: Callable[[Rows], None] = lambda rows: None  # encodes rows alone; raises if it can't
    word_lists: bool = False  # a text may be a list of words (a tagger)
    aliases: dict[str, str] = field(default_factory=dict)  # the task's names for fields
    numbers: tuple[str, ...] = ()  # whole numbers a request may add, given to each row


def _request_body(raw: bytes, served: Served, known: set[str]) -> dict[str, Any]:
    """The body as a JSON object of `known` fields, the task's names for them read as the
    modality's; a RequestError (400 or 422) says what is wrong with it."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise RequestError(400, "the body is not JSON ft reads: nested too deeply") from None
    except ValueError as err:
        raise RequestError(400, f"the body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise RequestError(422, f"the body must be a JSON object, got {kind_of(body)}")
    numbers = {n for info in tasks.TASKS.values() for n in info.request_numbers}
    unknown = sorted(set(body) - (known - numbers) - set(served.numbers))
    if unknown:
        fields = ", ".join([*served.inputs.request_fields, *served.aliases, *served.numbers])
        raise RequestError(422, f"unknown field '{unknown[0][:40]}'; fields: {fields}")
    return _unaliased(body, served.aliases)


def _unaliased(body: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """The body with the task's field names ({"question", "context"}) as the modality's."""
    out = {key: value for key, value in body.items() if key not in aliases}
    for alias, field_name in aliases.items():
        if alias in body:
            if field_name in body:
                raise RequestError(422, f"send {alias} or {field_name}, not both")
            out[field_name] = body[alias]
    return out


@dataclass
class _Waiting:
    rows: Rows
    done: asyncio.Future


@dataclass
class Stats:
    requests: int = 0
    rows: int = 0
    refused: int = 0
    failed: int = 0
    retried: int = 0  # batches that failed and were predicted again request by request
    batches: Counter = field(default_factory=Counter)  # rows per batch -> how many batches

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rows": self.rows,
            "refused": self.refused,
            "failed": self.failed,
            "retried_batches": self.retried,
            "batches": sum(self.batches.values()),
            "batch_rows": {str(k): v for k, v in sorted(self.batches.items())},
        }


class Batcher:
    """One queue of waiting requests and the worker that predicts them in batches."""

    def __init__(self, predict: Callable[[Rows], Rows], limits: Limits, stats: Stats) -> None:
        self.predict, self.limits, self.stats = predict, limits, stats
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker (graceful shutdown)."""
        await self.queue.join()
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker

    async def submit(self, rows: Rows) -> Rows:
        done = asyncio.get_running_loop().create_future()
        await self.queue.put(_Waiting(rows, done))
        return await done

    async def _work(self) -> None:
        while True:
            group = [await self.queue.get()]
            size = len(group[0].rows)
            deadline = time.monotonic() + self.limits.max_wait
            while size < self.limits.max_batch:
                left = deadline - time.monotonic()
                try:
                    waiting = (
                        self.queue.get_nowait()
                        if left <= 0
                        else await asyncio.wait_for(self.queue.get(), left)
                    )
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                group.append(waiting)
                size += len(waiting.rows)
            await self._run(group)
            for _ in group:
                self.queue.task_done()

    async def _run(self, group: list[_Waiting]) -> None:
        rows = [row for waiting in group for row in waiting.rows]
        self.stats.batches[len(rows)] += 1
        try:
            predicted = await asyncio.to_thread(self.predict, rows)
        except Exception as err:
            if len(group) > 1:  # whichever request broke the batch fails alone
                self.stats.retried += 1
                for waiting in group:
                    await self._run([waiting])
                return
            if not group[0].done.done():
                group[0].done.set_exception(err)
            return
        start = 0
        for waiting in group:
            end = start + len(waiting.rows)
            if not waiting.done.done():  # its client may have gone
                waiting.done.set_result(predicted[start:end])
            start = end


def request_model() -> type:
    """The body `POST /predict` documents at /docs (pydantic; the route reads it itself):
    every modality's fields, all optional."""
    from pydantic import ConfigDict, create_model

    fields: dict[str, Any] = {}
    for name in inputs.MODALITIES:
        fields.update({key: (kind, None) for key, kind in inputs.get(name).request_fields.items()})
    for info in tasks.TASKS.values():
        fields.update({alias: (str | None, None) for alias, _ in info.request_aliases})
        fields.update({number: (int | None, None) for number in info.request_numbers})
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [
                    {"text": "a gripping, funny film"},
                    {"texts": ["great", "dull"]},
                    {"pairs": [["He left.", "He went away."]]},
                ]
            },
        ),
        __doc__="One of the fields the served model's input reads (GET /info: inputs).",
        **fields,
    )


def build_app(served: Served, limits: Limits) -> Any:
    """The FastAPI app: POST /predict, GET /health, /info, /stats, and /docs."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    stats = Stats()
    batcher = Batcher(served.predict, limits, stats)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()  # SIGTERM: requests already queued are still answered

    PredictRequest, read_rows = request_model(), served.inputs.request_rows

    app = FastAPI(
        title="ft serve",
        version=str(served.info.get("ft_version", "")),
        description=f"Predictions of {served.info.get('model', 'a trained model')}",
        lifespan=lifespan,
    )

    def refuse(status: int, message: str) -> JSONResponse:
        stats.refused += 1
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        stats.failed += 1
        return JSONResponse({"error": f"internal error: {_one_line(err)}"}, status_code=500)

    # The body is read and checked here (one-line errors), and documented at /docs.
    documented = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    }

    @app.post("/predict", openapi_extra=documented, responses={400: {}, 408: {}, 413: {}, 422: {}})
    async def predict(request: Request) -> Any:
        """Labels and probabilities (or scores, or tags) as `ft predict` writes them."""
        try:
            raw = await asyncio.wait_for(_read_body(request, limits.max_body), limits.read_timeout)
        except TimeoutError:
            return refuse(408, f"the body did not arrive within {limits.read_timeout:g} s")
        except RequestError as err:
            return refuse(err.status, str(err))
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is left to read it
        try:
            body = _request_body(raw, served, set(PredictRequest.model_fields))
            given = {key: body.pop(key) for key in served.numbers if key in body}
            rows, single = read_rows(body, served.columns, limits, served.word_lists)
            rows = [{**row, **given} for row in rows]
            await asyncio.to_thread(_checked, served.check, rows)
        except RequestError as err:
            return refuse(err.status, str(err))
        stats.requests += 1
        stats.rows += len(rows)
        try:
            predicted = await batcher.submit(rows)
        except FtError as err:
            return refuse(422, str(err))
        except Exception as err:
            stats.failed += 1
            return JSONResponse({"error": f"prediction failed: {_one_line(err)}"}, status_code=500)
        return {"prediction": predicted[0]} if single else {"predictions": predicted}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Task, labels, inputs, backend, limits and the model card."""
        return {**served.info, "inputs": served.columns, "limits": vars(limits)}

    @app.get("/stats")
    async def counts() -> dict[str, Any]:
        """Requests, rows, refusals and how many rows each batch held."""
        return stats.as_dict()

    return app


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, read chunk by chunk and refused once it passes `limit` bytes, whether it
    declared its length or came chunked."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body of {length} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _checked(check: Callable[[Rows], None], rows: Rows) -> None:
    """The request's rows encoded alone: what the tokenizer (or decoder) refuses is a 422
    for this request, not a failure of the batch it would have joined."""
    try:
        check(rows)
    except Exception as err:
        raise RequestError(422, f"the model cannot read this input: {_one_line(err)}") from err


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def header_deadline(seconds: float) -> type:
    """uvicorn's h11 protocol with a deadline for a request's headers: a connection that has
    not sent a whole request head within `seconds` of opening (or of its last answer) is
    closed, so clients that stall cannot hold connections forever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the head is in; the app times the body

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline
