"""ActiveStructOpt: surrogate ensemble + lower-confidence-bound acquisition + gradient proposals.

- :mod:`~aso_workflows.optimizers.aso.acquisition`: acquisition functions on predicted spectra.
- :mod:`~aso_workflows.optimizers.aso.proposal`: multi-start gradient proposals through the surrogate.
- :mod:`~aso_workflows.optimizers.aso.optimizer`: the optimiser that ties them together.
"""

from __future__ import annotations

from aso_workflows.optimizers.aso.optimizer import ActiveStructOpt

__all__ = ["ActiveStructOpt"]
