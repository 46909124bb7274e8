"""What ships with ft: tiny model configs, demo data, and the data sets ft makes itself."""

from __future__ import annotations

from pathlib import Path


def generated(name: str) -> Path:
    """The folder of the generated set `name` (`data.path=generated:NAME`), made on first use."""
    from ft_cli.assets import scenes, shapes, tones
    from ft_cli.errors import FtError

    for maker in (shapes, tones, scenes):
        if name in maker.SETS:
            return maker.ensure(name)
    known = [*shapes.SETS, *tones.SETS, *scenes.SETS]
    raise FtError(
        f"data: 'generated:{name}' is not a set ft makes; use one of"
        f" {', '.join('generated:' + k for k in known)}"
    )
