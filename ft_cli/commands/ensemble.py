"""`ft ensemble`, and the ensemble side of `ft eval` and `ft predict`.

- `ft ensemble RUNS_OR_SWEEP... --method M --output DIR`: fit the combination
  on the validation split, print every member next to the ensemble, save the
  manifest (`DIR/ensemble.json`) that `ft eval DIR` and `ft predict DIR` take.
- `ft eval RUNS_OR_SWEEP... --ensemble M[,M...]|all`: the members and each
  method on a split or file, in one table.
(`ft predict RUNS_OR_SWEEP... --ensemble M --input F` and `ft predict DIR` are in
`ft_cli.commands.predict`.)
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path

from ft_cli import paths
from ft_cli.commands.arguments import ENSEMBLE_HELP, parse_many
from ft_cli.ensembles import manifest, scoring
from ft_cli.errors import FtError

USAGE = (
    "usage: ft ensemble RUNS_OR_SWEEP_DIR... --method METHOD --output DIR"
    " [--weights W1,W2,...] [KEY=VALUE ...]\n"
    "  METHOD: mean, vote, weighted, greedy or stack; fit on the validation split"
)


def _saved(folders: list[str]) -> manifest.Manifest | None:
    return manifest.read(Path(folders[0])) if len(folders) == 1 else None


def evaluate(folders: list[str], given: dict[str, str], overrides: list[str]) -> int:
    """`ft eval ... --ensemble METHODS` (or an ensemble folder): the table and its JSON."""
    saved = _saved(folders)
    if saved is not None and "--ensemble" in given:
        raise FtError(f"{folders[0]} is a saved {saved.combiner.method} ensemble; drop --ensemble")
    methods = [saved.combiner.method] if saved else scoring.parse_methods(given["--ensemble"])
    split, file = given.get("--split", "validation"), given.get("--file")
    scored = scoring.score(
        folders,
        methods,
        given.get("--weights"),
        split,
        file,
        overrides,
        saved.combiner if saved else None,
        functools.partial(manifest.check_members, saved) if saved else None,
    )
    title = f"ensemble of {len(scored.members)} on {scored.source} ({scored.count} rows)"
    scoring.print_table(scored, title)
    home = scoring.home_of(folders)
    if home is not None:
        written = home / "ensemble_metrics.json"
        if not paths.write_atomic(written, json.dumps(scoring.record(scored), indent=2) + "\n"):
            raise FtError(
                f"the metrics above could not be saved to {written} (read-only or full disk)"
            )
        print(f"written: {written}")
    return 0


def main(args: list[str]) -> int:
    """`ft ensemble RUNS... --method M --output DIR`: fit, score on validation, save."""
    flags = {
        "--method": ENSEMBLE_HELP.replace(", a comma list, or all", ""),
        "--output": "the folder for ensemble.json",
        "--weights": "weighted: one weight per member, W1,W2,...",
    }
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    folders, given, overrides = parse_many(args, flags)
    for flag in ("--method", "--output"):
        if flag not in given:
            raise FtError(f"{flag} is required ({flags[flag]})")
    methods = scoring.parse_methods(given["--method"])
    if len(methods) != 1:
        raise FtError(f"--method {given['--method']}: one method per saved ensemble")
    output = Path(given["--output"])
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FtError(f"--output {output}: exists and is not an empty folder; name a new folder")
    scored = scoring.score(folders, methods, given.get("--weights"), "validation", None, overrides)
    scoring.print_table(scored, f"ensemble of {len(scored.members)} on {scored.source}")
    first = scored.members[0]
    command = shlex.join(["ft", "ensemble", *args])
    written = manifest.write(
        output,
        [m.found.home for m in scored.members],
        scored.combiners[methods[0]],
        first.spec.task.kind,
        first.labels,
        scoring.record(scored),
        command,
    )
    print(f"written: {written} (ft predict {output} --input FILE; ft eval {output})")
    return 0
