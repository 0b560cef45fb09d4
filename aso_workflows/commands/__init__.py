"""The ``aso`` commands, one module each; :mod:`aso_workflows.cli` registers them on the app.

``simulate``, ``run``, ``submit``, ``status``, ``results`` (best / history / spectra), ``report``,
``resume`` and ``webgui``; :mod:`~aso_workflows.commands.common` holds what they share.
"""
