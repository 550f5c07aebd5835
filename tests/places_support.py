"""Reading place codes back from their printed QR images, as a scanner would.

PNG: the pixels (pypng) handed to zxing-cpp. SVG: segno draws the dark modules as one path of
horizontal runs (``M x y``, ``m dx dy``, ``h n`` in module units, ``scale(k)``); the path is
rasterised here, module by module, and the pixels handed to zxing-cpp too: the image is read,
not compared with what the same library would write.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import png
import zxingcpp

_PATH = re.compile(r"([Mmh])\s*(-?[0-9.]+)(?:\s+(-?[0-9.]+))?")
_SVG = "{http://www.w3.org/2000/svg}"


def decode_png(data: bytes) -> list[str]:
    """The texts of the QR codes in a PNG image."""
    width, height, pixels, info = png.Reader(bytes=data).asDirect()
    assert info["planes"] == 1 and not info["alpha"]  # greyscale, as segno writes it
    top = (1 << info["bitdepth"]) - 1
    grey = bytes(value * 255 // top for line in pixels for value in line)
    return [r.text for r in zxingcpp.read_barcodes(memoryview(grey).cast("B", (height, width)))]


def decode_svg(data: bytes, pixels_per_module: int = 4) -> list[str]:
    """The texts of the QR codes in a segno SVG image (its path rasterised)."""
    root = ET.fromstring(data)  # noqa: S314 - the test's own output, not untrusted
    path = root.find(f"{_SVG}path")
    assert path is not None, "no path in the SVG"
    scale = float(re.fullmatch(r"scale\(([0-9.]+)\)", path.get("transform", "scale(1)"))[1])  # type: ignore[index]
    size = int(float(root.get("width", "0")) / scale)
    dark = [[False] * size for _ in range(size)]
    x = y = 0.0
    for op, a, b in _PATH.findall(path.get("d", "")):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:  # h: a run of dark modules on row y (drawn at its middle, y + 0.5)
            row = int(y)
            for col in range(int(x), int(x + float(a))):
                dark[row][col] = True
            x += float(a)
    k = pixels_per_module
    grey = bytearray()
    for row in dark:
        line = bytes(0 if d else 255 for d in row for _ in range(k))
        grey += line * k
    side = size * k
    return [r.text for r in zxingcpp.read_barcodes(memoryview(bytes(grey)).cast("B", (side, side)))]
