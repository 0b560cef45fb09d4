"""Reading target spectra from files, with the hints their headers carry and checks against the simulator.

Formats (``read_options.format``; ``"auto"`` recognises them by name, header and column labels):

* ``columns``: any whitespace- or comma-separated text, ``#`` comments, an optional row of column
  names; PDFgetX2/PDFgetX3/PDFgetN ``.gr`` files with their settings header (data after the
  ``#### start data`` line). A fourth column of a PDF file is dG(r) (PDFgui's rule: used when every
  value is > 0), kept as ``extra["dy"]`` for ``fit: {weights: dG}``.
* ``xmu``/``chi``: FEFF's ``xmu.dat`` (omega, e, k, mu, mu0, chi) and ``chi.dat`` (k, chi, mag, phase).
* ``athena``: files exported by Athena/Demeter (or Larch): ``.xmu`` (μ(E), normalised here),
  ``.nor`` (normalised μ(E)) and ``.chik`` (k, chi, chik, chik2, chik3 ...).

Header hints (:func:`target_hints`), as PDFgui reads them: the radiation (a ``stype=``/``mode =``
setting when there is one, else ``x-ray``/``PDFgetX`` → X-ray, ``neutron``/``PDFgetN`` → neutron),
``qmax=``, ``qdamp=``, ``qbroad=``; from Athena headers the
element, edge and E0. :func:`settings_with_hints` fills a missing ``qmax``/``radiation`` setting from
them; :func:`read_target` with ``simulator=`` refuses a file that contradicts the settings (radiation,
absorber, edge, k-weight), with one line naming the file.

Modules: :mod:`~.options` (``read_options``), :mod:`~.base` (the file as read, header hints, formats,
the :class:`~.base.TargetReader` interface), :mod:`~.reading` (:func:`read_target`, the same for every
technique) and one reader per technique, named by the technique's entry in
:mod:`aso_workflows.spectra.techniques`: :mod:`~.pdf`, :mod:`~.exafs`, :mod:`~.xanes` (XANES from raw μ(E)
is normalised as Athena and Larch do).

Every problem with a file raises :class:`~aso_workflows.errors.InputError` whose message is one line
naming the file and the problem. Nothing is repaired silently: a file whose abscissa is not strictly
increasing is an error (not sorted), and a file that does not cover the simulator grid is an error
(not extrapolated).
"""

from __future__ import annotations

from aso_workflows.spectra.targets.options import FORMATS, ReadOptions
from aso_workflows.spectra.targets.reading import (
    read_target,
    settings_with_hints,
    target_hints,
    target_reader,
)

__all__ = ["read_target", "ReadOptions", "FORMATS", "target_hints", "settings_with_hints", "target_reader"]
