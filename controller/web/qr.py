"""QR codes drawn as inline SVG for the pages (the only importer of qrcode here).

SVG needs no image library and passes the pages' Content-Security-Policy as markup.
"""

from __future__ import annotations

import qrcode
import qrcode.image.svg


def qr_svg(text: str) -> str:
    """``text`` as a QR code, as an ``<svg>`` element that scales to its box."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=2)
    svg: str = image.to_string(encoding="unicode")
    return svg.replace('width="', 'data-mm-width="', 1).replace('height="', 'data-mm-height="', 1)
