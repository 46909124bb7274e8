"""`ft serve RUN_OR_EXPORT [--host H] [--port P] [--backend B] [limits] [KEY=VALUE ...]`.

Serves a trained model over HTTP (see `ft_cli.deploy.serving`): POST /predict,
GET /health, /info, /stats, and the OpenAPI docs at /docs. The model is the
run's (torch) or its ONNX export (`--backend onnxruntime[-int8]`, or the
export folder itself as the argument). SIGTERM or Ctrl-C stops taking new
connections, answers the requests in flight, then exits.
"""

from __future__ import annotations

import dataclasses
import errno
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ft_cli.commands.arguments import parse_many
from ft_cli.errors import FtError

USAGE = (
    "usage: ft serve RUN_OR_EXPORT [--host 127.0.0.1] [--port 8000]"
    " [--backend torch|onnxruntime|onnxruntime-int8] [--task NAME] [--max-batch 32]"
    " [--max-wait-ms 5] [--max-items 64] [--max-chars 10000] [--max-body-mb 1]"
    " [--max-megapixels 40] [--read-timeout-s 10] [KEY=VALUE ...]"
)
INSTALL = "pip install 'ft-cli[serve]' (from a checkout: pip install -e '.[serve]')"
# --flag: (what it is, its Limits field, how a number becomes that field's value)
NUMBERS = {
    "--max-batch": ("rows predicted together", "max_batch", int),
    "--max-wait-ms": ("ms a request waits for a batch to fill", "max_wait", lambda v: v / 1000),
    "--max-items": ("texts in one request", "max_items", int),
    "--max-chars": ("characters in one text", "max_chars", int),
    "--max-body-mb": ("megabytes in one request body", "max_body", lambda v: v * 1_000_000),
    "--max-megapixels": ("megapixels in one image", "max_pixels", lambda v: v * 1_000_000),
    "--read-timeout-s": ("seconds a request may take to arrive", "read_timeout", float),
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Seconds SIGTERM waits for requests in flight (the queue drains first; a stalled client is
# cut by the read timeout well before this).
SHUTDOWN_SECONDS = 30


def main(args: list[str]) -> int:
    flags = {
        "--host": "the address to listen on",
        "--port": "the port",
        "--backend": "torch, onnxruntime or onnxruntime-int8",
        "--task": "a task of a multi-task run",
        **{flag: text for flag, (text, _, _) in NUMBERS.items()},
    }
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    folders, given, overrides = parse_many(args, flags)
    if len(folders) != 1:
        raise FtError("serve one model: give one run dir or export folder")
    require_server()
    from ft_cli.deploy import serving

    limits = serving.Limits(**_limits(given))
    host, port = given.get("--host", "127.0.0.1"), _port(given.get("--port", "8000"))
    listener = _listen(host, port)  # a taken port is found before the model is loaded
    if host not in LOOPBACK and not host.startswith("127."):
        print(
            f"warning: listening on {host}: ft serve has no authentication or TLS; put a"
            " proxy that has them in front, or serve on 127.0.0.1",
            file=sys.stderr,
        )
    served, found = load(
        folders[0], given.get("--backend"), given.get("--task"), overrides, limits.max_batch
    )
    if served.inputs.body_limit is not None and "--max-body-mb" not in given:
        limits = dataclasses.replace(limits, max_body=served.inputs.body_limit)
    where = f"http://{host}:{listener.getsockname()[1]}"
    model = found.checkpoint or found.home
    print(
        f"ft serve: {model} ({served.info['task']}, {served.info['backend']}) on {where}"
        f" (docs: {where}/docs); Ctrl-C or SIGTERM stops",
        flush=True,
    )
    import uvicorn

    app = serving.build_app(served, limits)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        http=serving.header_deadline(limits.read_timeout),
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
    )
    stops: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # uvicorn drains on these, then hands the signal on to the handler it found.
        signal.signal(signum, lambda number, frame: stops.append(number))
    uvicorn.Server(config).run(sockets=[listener])
    why = f" on {signal.Signals(stops[0]).name}" if stops else ""
    print(f"ft serve: stopped{why}, every request answered", flush=True)
    return 0


def require_server() -> None:
    import importlib.util

    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise FtError(f"{module} is not installed: {INSTALL}")


def _limits(given: dict[str, str]) -> dict[str, Any]:
    chosen = {}
    for flag, (_, name, convert) in NUMBERS.items():
        if flag in given:
            value = given[flag]
            if not value.isdigit() or (int(value) < 1 and flag != "--max-wait-ms"):
                raise FtError(f"{flag} {value}: give a positive whole number")
            if int(value) > 10**9:
                raise FtError(f"{flag} {value}: too large; give at most 1000000000")
            chosen[name] = convert(int(value))
    return chosen


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise FtError(f"--port {value}: give a port number from 0 to 65535 (0: any free one)")
    return int(value)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one line, not a log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise FtError(
            f"--host {host}: not an address or host name this machine can listen on"
            " (give 127.0.0.1, 0.0.0.0 or one of its addresses)"
        ) from err
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as err:
        listener.close()
        if err.errno == errno.EADDRNOTAVAIL:
            raise FtError(
                f"--host {host}: not an address of this machine ({err.strerror}); give"
                " 127.0.0.1, 0.0.0.0 or one of its addresses"
            ) from err
        raise FtError(
            f"--host {host} --port {port}: cannot listen there ({err.strerror});"
            " pick another port with --port"
        ) from err
    listener.listen(2048)
    return listener


def load(
    path: str, backend: str | None, task: str | None, overrides: list[str], batch: int
) -> tuple[Any, Any]:
    """(what the server predicts with and says about itself, the trained run it comes from)."""
    from ft_cli import __version__, tasks
    from ft_cli.commands import predict
    from ft_cli.deploy import onnx_export, serving
    from ft_cli.models import trained

    folder = Path(path)
    if (folder / onnx_export.RECORD).is_file():  # an export folder: serve what it was made from
        path, task = _export_source(folder, task)
        backend = backend or "onnxruntime"
    backend = backend or "torch"
    if backend not in predict.BACKENDS:
        raise FtError(f"--backend {backend}: use {', '.join(predict.BACKENDS)}")
    found = trained.locate(path, task)
    spec = trained.spec_for(found, overrides)
    kind = tasks.get(spec.task.kind)
    kind.check_predictable()
    predictor = predict.load_predictor(found, spec, batch, True, backend)
    columns = kind.request_columns(spec.data)
    card = found.export / "README.md" if found.export is not None else None
    info = {
        "task": spec.task.kind,
        "labels": predictor.labels,
        "backend": backend,
        "model": spec.model.name_or_path,
        "run": str(found.home),
        "ft_version": __version__,
        "model_card": card.read_text() if card and card.is_file() else None,
    }
    aliases = dict(tasks.info(spec.task.kind).request_aliases)
    numbers = tasks.info(spec.task.kind).request_numbers
    served = serving.Served(
        predictor, columns, info, kind.inputs, predictor.check, kind.word_lists, aliases, numbers
    )
    return served, found


def _export_source(folder: Path, task: str | None) -> tuple[str, str | None]:
    """(the run dir or checkpoint an export folder was made from, its task) by its record."""
    from ft_cli.deploy import export_folder
    from ft_cli.rundir.checkpoint import checkpoint_name

    record = export_folder.read_record(folder)
    weights = (record or {}).get("weights") or {}
    run = folder.parent
    if record is None or not (run / "config.yaml").is_file():
        raise FtError(
            f"{folder}: not an ONNX export inside its run dir; serve the run dir with"
            " --backend onnxruntime"
        )
    step = weights.get("checkpoint_step")
    source = run / "checkpoints" / checkpoint_name(step) if step is not None else run
    if step is None and weights.get("task") is None and folder.name.startswith("onnx-"):
        task = task or folder.name.split("-", 1)[1]  # an export of the first format
    return str(source), task or weights.get("task")
