"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FtError(Exception):
    """A problem the user can fix (bad config, missing file, unreachable hub).

    The message must name the key, file or column and say what would fix it.
    """


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def warn(message: str) -> None:
    """A one-line warning to the user on stderr (the run goes on)."""
    import sys

    print(f"warning: {message}", file=sys.stderr)
