"""pytest plugin: counts the faults the fault-injection tests inject and how many the system recovered from.

A test takes the ``fault_ledger`` fixture and calls ``fault_ledger.inject(kind, detail)`` when it injects a
fault, then ``fault_ledger.recovered(kind, detail)`` once it has checked that the system recovered (for bad
input: a clear one-line error and nothing stored lost or duplicated). It also records what it checked of
the store with ``fault_ledger.evaluations(lost=..., duplicated=...)``. At the end of the session the totals
are printed in pytest's summary and written to ``test-artifacts/faults.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@dataclass
class FaultLedger:
    injected: Counter = field(default_factory=Counter)
    recovered_: Counter = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    checks: int = 0
    details: list[dict] = field(default_factory=list)

    def inject(self, kind: str, detail: str = "") -> None:
        self.injected[kind] += 1
        self.details.append({"event": "injected", "kind": kind, "detail": detail})

    def recovered(self, kind: str, detail: str = "") -> None:
        self.recovered_[kind] += 1
        self.details.append({"event": "recovered", "kind": kind, "detail": detail})

    def evaluations(self, lost: int, duplicated: int) -> None:
        self.checks += 1
        self.lost += int(lost)
        self.duplicated += int(duplicated)

    def summary(self) -> dict:
        return {
            "faults_injected": sum(self.injected.values()),
            "faults_recovered": sum(self.recovered_.values()),
            "by_kind": {
                k: {"injected": self.injected[k], "recovered": self.recovered_[k]}
                for k in sorted(self.injected)
            },
            "store_checks": self.checks,
            "evaluations_lost": self.lost,
            "evaluations_duplicated": self.duplicated,
            "events": self.details,
        }


_LEDGER = FaultLedger()


@pytest.fixture(scope="session")
def fault_ledger() -> FaultLedger:
    """The session's fault ledger (see module docstring)."""
    return _LEDGER


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook signature
    if not _LEDGER.injected:
        return
    s = _LEDGER.summary()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "faults.json").write_text(json.dumps(s, indent=2))
    terminalreporter.section("fault injection")
    for kind, n in s["by_kind"].items():
        terminalreporter.write_line(f"{kind:32s} injected {n['injected']:3d}  recovered {n['recovered']:3d}")
    terminalreporter.write_line(
        f"TOTAL faults injected {s['faults_injected']}, recovered {s['faults_recovered']}; "
        f"evaluations lost {s['evaluations_lost']}, duplicated {s['evaluations_duplicated']} "
        f"(over {s['store_checks']} store checks)"
    )
