"""`ft calibrate RUN [OVERRIDES]`: fit a finished run's calibration on its validation split
and fold it into its model (task.calibration=temperature unless the overrides say
otherwise; task.threshold=auto or a number to set a binary decision threshold too).

The fit is recorded in RUN/model/calibration.json and under "calibration" in
RUN/metrics.json; ft eval, ft predict, ft serve and a later ft export then return the
calibrated probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

from ft_cli.commands.arguments import parse_many
from ft_cli.errors import FtError

USAGE = (
    "usage: ft calibrate RUN [task.calibration=temperature|none] [task.threshold=auto|0.3]"
    "   (fits on the run's validation split and rewrites RUN/model)"
)


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    folders, _, overrides = parse_many(args, {}, ())
    if len(folders) != 1:
        raise FtError(f"calibrate one run: give one run dir, not {len(folders)}")
    from ft_cli.tasks import calibration

    if not any(o.startswith("task.calibration=") for o in overrides):
        overrides = [*overrides, "task.calibration=temperature"]
    record = calibration.calibrate_run(folders[0], overrides)
    print(calibration.summary(record))
    run_dir = Path(folders[0])
    if (run_dir / "metrics.json").is_file():
        from ft_cli.outputs import tracking

        found = json.loads((run_dir / "metrics.json").read_text())
        tracking.write_metrics(run_dir, {**found, "calibration": record})
    return 0
