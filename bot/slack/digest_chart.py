"""The digest's picture: one small PNG, hours held per resource over the last two weeks, with
the number of grants and the median wait for an approval written beside each bar. People look
at it before they read the digest.

Drawn with Pillow (a plain raster image: no plotting stack in the image the bot ships), with
its built-in font, so nothing depends on fonts installed on the host. Rendering runs after the
text digest is posted and any failure skips the chart (``bot.slack.notifier``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import timedelta

from PIL import Image, ImageDraw, ImageFont

from bot.domain.digest_chart import ResourceUse
from bot.domain.durations import format_duration

WIDTH = 720
ROW = 34
TOP = 48
LEFT = 170
RIGHT = 250
MAX_ROWS = 12
BAR = (74, 21, 75)  # Slack aubergine
TEXT = (29, 28, 29)
MUTED = (97, 96, 97)


def render_usage_chart(uses: Sequence[ResourceUse], days: int) -> bytes:
    """A PNG of ``uses`` (the most-held first, at most ``MAX_ROWS``)."""
    shown = list(uses[:MAX_ROWS])
    height = TOP + ROW * max(len(shown), 1) + 28
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(14)
    small = _font(12)
    draw.text((16, 14), f"Access held per resource, last {days} days", fill=TEXT, font=font)
    if not shown:
        draw.text((16, TOP + 6), "No grants in this period.", fill=MUTED, font=small)
    longest = max((use.hours_held for use in shown), default=0.0) or 1.0
    span = WIDTH - LEFT - RIGHT
    for row, use in enumerate(shown):
        y = TOP + row * ROW
        draw.text((16, y + 8), _fit(use.resource, 22), fill=TEXT, font=small)
        length = max(2, round(span * use.hours_held / longest))
        draw.rectangle((LEFT, y + 6, LEFT + length, y + ROW - 8), fill=BAR)
        wait = f", approved in ~{_short(use.median_wait)}" if use.median_wait else ""
        label = f"{use.hours_held:.1f} h, {use.grants} grant{'s' * (use.grants != 1)}{wait}"
        draw.text((LEFT + length + 8, y + 8), label, fill=MUTED, font=small)
    draw.text(
        (16, height - 22),
        "hours held: issue to revocation (or now); approved in: median wait for approval",
        fill=MUTED,
        font=small,
    )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font, one size
        return ImageFont.load_default()


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(wait: timedelta) -> str:
    if wait < timedelta(minutes=1):
        return f"{max(1, round(wait.total_seconds()))}s"
    return format_duration(timedelta(minutes=round(wait.total_seconds() / 60)))
