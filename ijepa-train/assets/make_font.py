"""Writes plot-font.ttf: DejaVu Sans (as matplotlib's wheel ships it) cut to the characters the
training plots draw (printable ASCII and a few signs), so the PNG plots need no system font.

    pip install matplotlib==3.11.2 fonttools  &&  python make_font.py
"""
import pathlib

import matplotlib
from fontTools import subset

SOURCE = pathlib.Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"
CHARS = [*range(0x20, 0x7F), 0xB2, 0xB7, 0xD7, 0x2013, 0x2212, 0x2248]  # ² · × – − ≈

options = subset.Options()
options.layout_features = []
options.hinting = False
options.name_IDs = ["*"]
font = subset.load_font(str(SOURCE), options)
sub = subset.Subsetter(options)
sub.populate(unicodes=CHARS)
sub.subset(font)
out = pathlib.Path(__file__).with_name("plot-font.ttf")
subset.save_font(font, str(out), options)
print(out, out.stat().st_size, "bytes")
