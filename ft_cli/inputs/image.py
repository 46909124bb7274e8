"""Images: one image per row, a file path (relative to its table or folder) or the file's
bytes, read through the model's own image processor.

Files, checks, augmentation and batches are in `pictures`. A served request gives
`image` (an image file, base64) or `images` (a list); `ft predict` also reads a
folder of images or a .txt list of paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ft_cli.errors import FtError
from ft_cli.inputs.base import (
    Modality,
    RequestError,
    Rows,
    base64_files,
    check_file_column,
    listed_files,
)

if TYPE_CHECKING:
    from ft_cli.config.schema import DataConfig, ModelConfig

HINT = (
    "use a local folder (model.name_or_path=DIR) or a packaged image model with fresh"
    " weights: model=tiny_resnet, tiny_vit, tiny_segformer or tiny_rtdetr"
)
# The data formats images come in: folders of class folders, or tables of paths.
FORMATS = ("imagefolder", "maskfolder", "coco", "hub", "csv", "tsv", "json", "parquet")
SHEET_SIZE = 24  # mistakes on ft report's sheet


class Image(Modality):
    name = "image"
    noun = "images"
    request_fields = {"image": str | None, "images": list[str] | None}  # noqa: RUF012
    body_limit = 16_000_000  # a few base64 photos
    own_formats = ("imagefolder", "maskfolder", "coco")
    names_files = True
    augmented_by = "data.image_crop and data.image_flip"

    def processor(self, cfg: ModelConfig) -> Any:
        """The model's image processor (resize, crop, normalisation), in its PIL version:
        the same arithmetic as the torchvision one, without that dependency."""
        from transformers import AutoImageProcessor

        from ft_cli.models import model

        return model.load_part(
            cfg, AutoImageProcessor.from_pretrained, "image processor", HINT, backend="pil"
        )

    def same_inputs(self, processor: Any, other: Any) -> bool:
        from ft_cli.inputs import pictures

        def inputs(p: Any) -> tuple[Any, ...]:
            pixels = pictures.Pixels(p)
            return (pixels.height, pixels.width, list(p.image_mean), list(p.image_std))

        return inputs(processor) == inputs(other)

    def check_data(self, data: DataConfig, task: str, data_key: str, kind_key: str) -> None:
        if data.format.value not in FORMATS:
            raise FtError(
                f"{kind_key}{task} reads images: set {data_key}format to one of"
                f" {', '.join(FORMATS)}"
            )
        crop = data.image_crop
        if crop is not None and crop[0] > crop[1]:
            raise FtError(
                f"{data_key}image_crop=[{crop[0]:g}, {crop[1]:g}]: the low share is above the"
                " high one; give [low, high], e.g. [0.25, 1.0]"
            )

    def columns(self, data: DataConfig) -> dict[str, str]:
        return {"data.image_column": data.image_column}

    def measure(self, value: Any) -> dict[str, float]:
        from ft_cli.inputs import pictures

        try:
            width, height = pictures.open_image(_ref(value), mode=None).size  # the header
        except Exception:  # unreadable: the loader warns about it
            return {}
        return {"width": width, "height": height}

    def check_column(self, first: Any, key: str, column: str, split: str, source: str) -> None:
        check_file_column(first, key, "data.image_column", column, split, source, "image")

    def request_columns(self, data: DataConfig) -> dict[str, str]:
        return {"image": data.image_column}

    def request_rows(
        self, body: dict[str, Any], columns: dict[str, str], limits: Any, word_lists: bool
    ) -> tuple[Rows, bool]:
        """Base64 image files, each checked to be an image of at most `limits.max_pixels`."""
        from ft_cli.inputs import pictures

        hint = "image (an image file, base64) or images (a list)"
        found, single = base64_files(body, "image", "images", hint, limits)
        for where, data in found:
            pixels = pictures.pixel_count(data)
            if pixels is not None and pixels > limits.max_pixels:
                raise RequestError(
                    413,
                    f"{where}: {pixels / 1e6:.1f} megapixels; at most"
                    f" {limits.max_pixels / 1e6:g} an image",
                )
            why = pictures.undecodable(data)
            if why is not None:
                raise RequestError(422, f"{where}: not a readable image ({why})")
        return [{columns["image"]: data} for _, data in found], single

    def listed(self, source: Path) -> list[str] | None:
        """A folder (every image under it, sorted by path) or a .txt list of paths."""
        from ft_cli.inputs import pictures

        return listed_files(source, pictures.EXTENSIONS, "images")

    def describe(self, data: DataConfig) -> str:
        crop = data.image_crop
        changes = [f"random crops of {crop[0]:g}-{crop[1]:g} of the area"] if crop else []
        changes += ["left-right flips"] if data.image_flip else []
        return (
            f"image column `{data.image_column}`; training images"
            f" {' and '.join(changes) or 'unchanged'}, all resized and normalised by the saved"
            " image processor"
        )

    def activation_bytes(self, ready: Any, batch: int) -> int | None:
        """What a forward pass of one batch saves for backward (the net is on the meta device)."""
        import torch

        from ft_cli.models import profile

        pixels = ready.objective.pixels
        shape = (batch, pixels.channels, pixels.height, pixels.width)
        try:
            return profile.saved_activation_bytes(
                ready.net, {"pixel_values": torch.zeros(shape, device="meta")}
            )
        except RuntimeError:  # a forward that reads values (a detector's): on the CPU
            return profile.measured_on_cpu(ready.net.config, pixels.height, batch)[1]

    def mistakes_sheet(self, ready: Any, wrong: list[Any], path: Path, title: str) -> str | None:
        """The most confidently wrong images as a thumbnail sheet."""
        import matplotlib.pyplot as plt

        from ft_cli.inputs import pictures

        wrong = wrong[:SHEET_SIZE]
        if not wrong:
            return None
        columns = min(6, len(wrong))
        lines = -(-len(wrong) // columns)
        figure, grid = plt.subplots(
            lines, columns, figsize=(2.2 * columns, 2.5 * lines + 0.6), squeeze=False
        )
        split, labels = ready.rows, ready.labels
        for axes in grid.flat:
            axes.axis("off")
        for axes, outcome in zip(grid.flat, wrong, strict=False):
            picture = pictures.open_image(split.images[outcome.row])
            picture.thumbnail((160, 160))
            axes.imshow(picture)
            name = Path(split.name(outcome.row)).name
            guess = f"{labels[outcome.guess]} ({outcome.confidence:.2f})"
            axes.set_title(f"{name}\ntrue {labels[outcome.truth]}\npredicted {guess}", fontsize=8)
        figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return "misclassified images"


MODALITY = Image()


def _ref(value: Any) -> Any:
    """A path or bytes from a table cell (a hub cell holds {bytes, path})."""
    return (value.get("bytes") or value.get("path")) if isinstance(value, dict) else value
