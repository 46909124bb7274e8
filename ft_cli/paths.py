"""Where ft finds its configs, recipes and packaged assets, installed or from a checkout."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from ft_cli.errors import FtError

PACKAGE_DIR = Path(__file__).resolve().parent
PKG_PREFIX = "pkg:"


def _shipped(name: str) -> Path:
    # A wheel carries configs/ and recipes/ inside the package; a source checkout
    # (editable install) has them at the repository root.
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


def config_dir() -> Path:
    return _shipped("configs")


def recipes_dir() -> Path:
    return _shipped("recipes")


def resolve_path(value: str, key: str, base: str | Path | None = None) -> str:
    """Turn `pkg:PACKAGE/sub/path` into a file path; other values pass through.

    Relative plain paths are joined to `base` when given.
    """
    if value.startswith(PKG_PREFIX):
        package, _, rest = value[len(PKG_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FtError(
                f"{key}: package '{package}' in '{value}' is not installed; pip install it"
            )
        return str(Path(spec.origin).parent / rest)
    if base is not None and not Path(value).is_absolute():
        return str(Path(base) / value)
    return value


def cache_root() -> Path:
    """ft's caches: $FT_CACHE_DIR, else $XDG_CACHE_HOME/ft, else ~/.cache/ft."""
    if os.environ.get("FT_CACHE_DIR"):
        return Path(os.environ["FT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ft"


def write_atomic(path: Path, text: str) -> bool:
    """Write `text` to `path` through a temporary file and a rename, so readers never see
    half a file; False when the folder is read-only or full (a cache then only misses)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            f.write(text)
        os.replace(f.name, path)
    except OSError:
        return False
    return True
