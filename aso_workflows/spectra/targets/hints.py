"""What a target file's header says (:func:`header_hints`): radiation, Qmax, Qdamp, Qbroad (PDFgui's rules),
element, edge and E0 (Athena, XDI-like headers). Free of the readers, so any file reader may use it."""

from __future__ import annotations

import re

__all__ = ["header_hints"]

_F = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RADIATION_WORDS = {"x": "xray", "xray": "xray", "x-ray": "xray", "n": "neutron", "neutron": "neutron"}


def header_hints(header: str) -> dict:
    """PDF and XAS hints of a header (PDFgui's rules for the PDF ones)."""
    hints: dict = {}
    stated = re.search(r"\b(?:stype|mode|radiation)\s*[=:]\s*([A-Za-z-]+)", header, re.I)
    value = _RADIATION_WORDS.get(stated.group(1).lower()) if stated else None
    if value is not None:  # "stype=N", "mode = neutron" (PDFgui, PDFgetX3/N3 configuration)
        hints["radiation"] = value
    elif re.search(r"(x-?ray|PDFgetX)", header, re.I):  # else PDFgui's rule
        hints["radiation"] = "xray"
    elif re.search(r"(neutron|PDFgetN)", header, re.I):
        hints["radiation"] = "neutron"
    for key, names in (("qmax", "qmax"), ("qdamp", "qdamp|qsig"), ("qbroad", "qbroad|qalp")):
        m = re.search(rf"\b(?:{names}) *= *({_F})(?![\w.])", header, re.I)
        if m:
            hints[key] = float(m.group(1))
    m = re.search(r"Element(?:\.symbol)?\s*[=:]\s*([A-Z][a-z]?)\b", header)
    if m:
        hints["absorber"] = m.group(1)
    m = re.search(r"(?:Element\.edge\s*:|\bEdge\s*=)\s*([KLM][1-5]?)\b", header)
    if m:
        hints["edge"] = m.group(1).upper()
    m = re.search(rf"\bE0\s*[=:]\s*({_F})", header)
    if m:
        hints["e0"] = float(m.group(1))
    return hints
