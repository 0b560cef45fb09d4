"""The web GUI: FireWorks' pages for our workflows (:mod:`~aso_workflows.webgui.server`) and the live campaign
page (:mod:`~aso_workflows.webgui.campaign_page`).

It sits above :mod:`aso_workflows.results` and :mod:`aso_workflows.report` (the campaign page shows what
they read) and below the ``aso webgui`` command; see ``docs/cluster.md``.
"""
