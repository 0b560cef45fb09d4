"""pytest plugin: counts the faults the fault-injection tests inject and how many the system recovered from.

A test takes the ``fault_ledger`` fixture and calls ``fault_ledger.inject(kind, detail)`` when it injects a
fault. Whether the system *recovered* is not the test's say-so: the ledger decides it from the system's
state, with its own checks, independently of the test's assertions:

- :meth:`FaultLedger.verify_campaign` reads the campaign store: every proposal has exactly one
  evaluation (none lost, none duplicated), the campaign document's counters agree with the
  evaluations, each injected candidate is recorded with the expected ``failure_kind`` (or completed), and
  the campaign ended as expected;
- :meth:`FaultLedger.verify_unchanged` compares snapshots of a store taken before and after bad input;
- :meth:`FaultLedger.verify` takes a condition read off the system (an exception's kind, a LaunchPad
  state) for faults that do not go through a campaign.

At the end of the session the totals are printed in pytest's summary and written to
``test-artifacts/faults.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def store_check(state) -> tuple[int, int, bool]:
    """``(lost, duplicated, counters_agree)`` for a campaign, computed from its store.

    lost: proposals without an evaluation document (every proposal of a campaign that ended must have
    one: completed or failed with a reason). duplicated: evaluation documents beyond one per structure
    fingerprint, plus proposals pointing at an evaluation of another structure. counters_agree: the
    campaign document's ``n_used`` and ``n_failed`` equal the counts of its evaluations.
    """
    from aso_workflows.campaign.state import evaluation_id

    evals = list(state.db.evaluations.find({"campaign": state.name}, {"fingerprint": 1, "status": 1}))
    by_id = {e["_id"] for e in evals}
    lost = wrong = 0
    for p in state.db.proposals.find({"campaign": state.name}, {"fingerprint": 1, "evaluation_id": 1}):
        eid = evaluation_id(state.name, p["fingerprint"], state.settings_key)
        if eid not in by_id:
            lost += 1
        elif p.get("evaluation_id") not in (None, eid):
            wrong += 1
    duplicated = len(evals) - len({e["fingerprint"] for e in evals}) + wrong
    doc = state.db.campaigns.find_one({"_id": state.name}, {"n_used": 1, "n_failed": 1})
    n_used = sum(e["status"] == "completed" for e in evals)
    counters = (doc.get("n_used"), doc.get("n_failed", 0)) == (n_used, len(evals) - n_used)
    return lost, duplicated, counters


def store_snapshot(db) -> dict:
    """Every document of a campaign store, by collection (to compare before and after bad input)."""
    return {c: sorted(map(repr, db.db[c].find({}))) for c in db.db.list_collection_names()}


@dataclass
class FaultLedger:
    injected: Counter = field(default_factory=Counter)
    recovered: Counter = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    checks: int = 0
    details: list[dict] = field(default_factory=list)

    def inject(self, kind: str, detail: str = "") -> None:
        self.injected[kind] += 1
        self.details.append({"event": "injected", "kind": kind, "detail": detail})

    def _record(self, kind: str, ok: bool, detail: str) -> bool:
        if ok:
            self.recovered[kind] += 1
        self.details.append({"event": "recovered" if ok else "not recovered", "kind": kind, "detail": detail})
        return ok

    def verify(self, kind: str, ok: bool, detail: str = "") -> bool:
        """A fault outside a campaign: ``ok`` is a condition read off the system (not the test's result)."""
        return self._record(kind, bool(ok), detail)

    def verify_campaign(
        self,
        kind: str,
        state,
        failed: dict[str, str] | None = None,
        status: str = "completed",
        stop_reason: str | None = None,
        detail: str = "",
    ) -> bool:
        """Recovered when the store says so (:meth:`campaign_problems` finds none)."""
        problems = self.campaign_problems(state, failed, status, stop_reason)
        return self._record(kind, not problems, "; ".join(problems) or detail)

    def campaign_problems(
        self,
        state,
        failed: dict[str, str] | None = None,
        status: str = "completed",
        stop_reason: str | None = None,
    ) -> list[str]:
        """What the store shows wrong after a fault: evaluations lost or duplicated, counters that disagree,
        the campaign not ended with ``status`` (and ``stop_reason``), a proposal id of ``failed`` not
        recorded as failed with its ``failure_kind`` (``"*"``: any), a failure without a kind."""
        from aso_workflows.campaign.state import CampaignState

        state = CampaignState.load(state.db, state.name)  # what the store holds now
        lost, duplicated, counters = store_check(state)
        self.checks += 1
        self.lost += lost
        self.duplicated += duplicated
        problems = []
        if lost or duplicated or not counters:
            problems.append(f"lost {lost}, duplicated {duplicated}, counters agree {counters}")
        if state.doc.get("status") != status:
            problems.append(f"status {state.doc.get('status')!r}")
        if stop_reason is not None and state.doc.get("stop_reason") != stop_reason:
            problems.append(f"stop_reason {state.doc.get('stop_reason')!r}")
        by_pid = {e["proposal_id"]: e for e in state.evaluations(status=None)}
        for pid, want in (failed or {}).items():
            e = by_pid.get(pid)
            if e is None or e["status"] != "failed" or not e.get("error"):
                problems.append(f"{pid} not recorded as failed with a reason")
            elif want != "*" and e.get("failure_kind") != want:
                problems.append(f"{pid} failure_kind {e.get('failure_kind')!r}, expected {want!r}")
        unexplained = [e for e in by_pid.values() if e["status"] == "failed" and not e.get("failure_kind")]
        if unexplained:
            problems.append(f"{len(unexplained)} failures without a failure_kind")
        return problems

    def verify_unchanged(self, kind: str, before: dict, after: dict, detail: str = "") -> bool:
        """Bad input: recovered when the store is exactly as it was (nothing written, lost or duplicated)."""
        self.checks += 1
        changed = sorted(c for c in set(before) | set(after) if before.get(c) != after.get(c))
        return self._record(kind, not changed, f"changed: {changed}" if changed else detail)

    def summary(self) -> dict:
        return {
            "faults_injected": sum(self.injected.values()),
            "faults_recovered": sum(self.recovered.values()),
            "by_kind": {
                k: {"injected": self.injected[k], "recovered": self.recovered[k]}
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
