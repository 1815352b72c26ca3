"""Contact sheets: pictures tiled into one PNG, with an optional title strip."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TITLE_PADDING = 4  # pixels around the title's text
BACKGROUND = (255, 255, 255)


def title_height(title: str | None) -> int:
    """Height of the title strip above the grid (0 without a title)."""
    if not title:
        return 0
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    bottom = draw.textbbox((0, 0), title, font=ImageFont.load_default())[3]
    return int(bottom) + 2 * TITLE_PADDING


def save_grid(
    images: Sequence[Image.Image], path: str | Path, *, columns: int | None = None, title: str | None = None
) -> Path:
    """Tile ``images`` row by row (``columns`` default: ceil(sqrt(n))) into cells the size of the
    largest picture, under a one-line ``title`` (clipped to the grid's width); written atomically."""
    if not images:
        raise ValueError("save_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    rows = math.ceil(len(images) / columns)
    cell_w, cell_h = max(i.width for i in images), max(i.height for i in images)
    top = title_height(title)
    sheet = Image.new("RGB", (columns * cell_w, top + rows * cell_h), BACKGROUND)
    if title:
        ImageDraw.Draw(sheet).text((TITLE_PADDING, TITLE_PADDING), title, fill=(0, 0, 0), font=ImageFont.load_default())
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        sheet.paste(image.convert("RGB"), (column * cell_w, top + row * cell_h))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
