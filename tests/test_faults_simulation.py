"""Fault injection, simulations: FEFF crashes, hangs past the wall-time limit, fails for one absorber, and
non-physical geometries; every failure is recorded with its reason and replaced, retries are bounded.

FEFF faults come from a real FEFF executable of the user's kind (``engine: /path/to/feff``): a shell
script that runs the real FEFF 10 (feff10-rs) except in the run directories it is told to sabotage,
where it segfaults (SIGSEGV), exits non-zero or sleeps far past the wall-time limit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from campaign_files import SELF_TARGET, campaign_yaml
from fault_ledger import store_check
from pymatgen.core import Structure

from aso_workflows.campaign.learn import init_campaign, read_inputs
from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.campaign.state import get_db
from aso_workflows.config import load_config
from aso_workflows.spectra.exafs import EXAFSSimulator

DATA = Path(__file__).parents[1] / "aso_workflows" / "data"
EXAMPLE = Path(__file__).parents[1] / "examples" / "linio2_jt_pdf"
# one or two absorbers per structure, single scattering only: ~2-7 s per FEFF run on a busy 2-core box
TINY_EXAFS: dict[str, Any] = {"absorber": "Ni", "radius": 4.0, "rpath": 3.0, "nlegs": 2}


def fault_feff(tmp_path: Path, cases: list[tuple[str, str]]) -> Path:
    """A FEFF executable: real FEFF 10, except where ``$PWD`` matches a glob of ``cases`` (pattern, action).

    Actions: ``segv`` (the process dies of SIGSEGV), ``exit`` (status 7 and a message), ``hang``
    (sleeps 600 s, to be killed at the wall-time limit).
    """
    actions = {
        "segv": 'echo "injected fault: segmentation fault" >&2; kill -SEGV $$',
        "exit": 'echo "injected fault: FEFF error in module pot" >&2; exit 7',
        "hang": "sleep 600",
    }
    lines = ["#!/bin/sh", 'case "$PWD" in']
    lines += [f"  {pattern}) {actions[action]} ;;" for pattern, action in cases]
    lines += ["esac", f"exec {sys.executable} -c \"import feff10; feff10.run('feff.inp', '.')\"", ""]
    exe = tmp_path / "feff-with-faults"
    exe.write_text("\n".join(lines))
    exe.chmod(0o755)
    return exe


def write_campaign(tmp_path: Path, **fields) -> Path:
    fields = {"name": "faults", "optimizer": "random", "seed": 3, **fields}
    return campaign_yaml(tmp_path, fields.pop("name"), pair=SELF_TARGET, **fields)


def test_feff_crash_hang_and_bad_absorber_are_recorded_and_replaced(tmp_path, fault_ledger):
    """One FEFF segfault, one FEFF run past the wall time, one absorber whose FEFF always fails."""
    sites = EXAFSSimulator(sites=2, **TINY_EXAFS).absorber_sites(Structure.from_file(DATA / "LiNiO2.cif"))
    good, bad = sites  # seeded subset: the same two Ni sites for every structure of the campaign
    exe = fault_feff(
        tmp_path,
        [
            ("*/work/faults_0000_001/exafs/site_*", "segv"),  # candidate 1 of iteration 0: FEFF crashes
            (f"*/work/faults_0001_000/exafs/site_{good:04d}", "hang"),  # iteration 1, candidate 0
            (f"*/work/*/exafs/site_{bad:04d}", "exit"),  # this absorber fails for every candidate
        ],
    )
    exafs = {**TINY_EXAFS, "sites": 2, "engine": str(exe)}
    path = write_campaign(
        tmp_path,
        targets=[{"technique": "exafs", "structure": str(DATA / "LiNiO2.cif"), "settings": exafs}],
        budget=4,
        initial_size=2,
        simulation_timeout_s=25,
        min_absorber_fraction=0.5,
    )
    cfg = load_config(path)
    for kind in ("feff_segfault", "feff_walltime", "feff_absorber_error"):
        fault_ledger.inject(kind, "feff-with-faults executable")
    state = LocalCampaignRunner(progress=False).run(cfg)

    assert state.doc["status"] == "completed" and state.doc["stop_reason"] == "budget spent"
    assert state.n_used() == cfg.budget
    failed = {e["proposal_id"]: e for e in state.evaluations("failed")}
    assert set(failed) == {"faults:0000:001", "faults:0001:000"}
    crash, hang = failed["faults:0000:001"], failed["faults:0001:000"]
    assert crash["failure_kind"] == "simulator_error" and "exit status -11" in crash["error"]
    fault_ledger.verify_campaign("feff_segfault", state, failed={"faults:0000:001": "simulator_error"})
    assert hang["failure_kind"] == "walltime" and "timed out after 25 s" in hang["error"]
    fault_ledger.verify_campaign("feff_walltime", state, failed={"faults:0001:000": "walltime"})
    assert all("\n" not in e["error"] for e in failed.values())
    # every completed candidate is the average of its good absorber; the bad one is listed
    done = state.evaluations("completed")
    assert all(e["absorbers_failed"] == {"exafs": [bad]} for e in done)
    spectrum_doc = state.db.spectra.find_one({"_id": done[0]["spectra"]["exafs"]})
    assert spectrum_doc is not None
    spec = spectrum_doc["spectrum"]
    assert spec["absorber_sites"] == [good]
    prov = spectrum_doc["provenance"]
    assert (
        prov["absorbers_failed"][0]["site"] == bad and "exit status 7" in prov["absorbers_failed"][0]["error"]
    )
    averaged = all(e.get("absorbers_failed") == {"exafs": [bad]} for e in state.evaluations("completed"))
    problems = fault_ledger.campaign_problems(state)
    fault_ledger.verify(
        "feff_absorber_error",
        averaged and not problems,
        "; ".join(problems) or f"site {bad} averaged out of {len(done)} candidates",
    )
    # the failures were replaced: one proposal per completed simulation plus one per failure
    assert len(state.proposals()) == cfg.budget + len(failed)
    assert state.doc["n_failed"] == 2
    assert store_check(state) == (0, 0, True)


def test_nonphysical_geometry_is_refused_without_running_the_code(tmp_path, fault_ledger):
    cfg = load_config(write_campaign(tmp_path, name="geom", budget=6, initial_size=3))
    db = get_db(cfg.store_spec())
    state = init_campaign(cfg, db, cfg.output_dir.resolve(), read_inputs(cfg))
    existing = [
        {"structure": Structure.from_dict(p["structure"]), "kind": p["kind"]} for p in state.proposals(0)
    ]
    overlap = state.start.copy()
    overlap.translate_sites([1], overlap[0].coords - overlap[1].coords + [0.1, 0, 0], frac_coords=False)
    collapsed = state.start.copy()
    collapsed.scale_lattice(state.start.volume * 0.02)
    bad = [{"structure": overlap, "kind": "injected"}, {"structure": collapsed, "kind": "injected"}]
    pids = state.add_proposals(0, existing + bad)[-2:]
    for pid in pids:
        fault_ledger.inject("nonphysical_geometry", pid)
    state = LocalCampaignRunner(progress=False).run(cfg)

    assert state.n_used() == cfg.budget
    failed = {e["proposal_id"]: e for e in state.evaluations("failed")}
    assert set(failed) == set(pids)
    assert "are 0.100 Å apart" in failed[pids[0]]["error"]
    assert "collapsed cell" in failed[pids[1]]["error"]
    for pid in pids:
        e = failed[pid]
        assert e["failure_kind"] == "nonphysical_geometry" and e["error"].startswith("pdf: non-physical")
        # the code never ran: no spectrum cached for it, no work folder written
        assert state.db.spectra.count_documents({"fingerprint": e["fingerprint"]}) == 0
        assert not any((cfg.output_dir / "work" / pid.replace(":", "_")).glob("pdf/*"))
        fault_ledger.verify_campaign("nonphysical_geometry", state, failed={pid: "nonphysical_geometry"})
    assert state.db.spectra.count_documents({}) == cfg.budget
    assert len(state.proposals()) == cfg.budget + 2
    assert store_check(state) == (0, 0, True)


def test_wall_time_limit_kills_an_in_process_simulator(linio2, tmp_path, fault_ledger):
    """The PDF engine (a C extension in this process) runs in a forked child that is killed at the limit."""
    from aso_workflows.campaign.evaluate import _call_with_limit, failure_kind
    from aso_workflows.spectra.pdf import PDFSimulator

    sim = PDFSimulator(rmax=30.0)
    big = linio2 * (5, 5, 5)  # 1500 atoms: seconds of pdffit2
    fault_ledger.inject("pdf_walltime", "1500-atom PDF under a 0.2 s limit")
    with pytest.raises(RuntimeError) as exc:
        _call_with_limit(sim, big, tmp_path, 0.2)
    assert failure_kind(exc.value) == "walltime" and "timed out after 0.2 s" in str(exc.value)
    fault_ledger.verify("pdf_walltime", failure_kind(exc.value) == "walltime", str(exc.value))
    ok = _call_with_limit(PDFSimulator(), linio2, tmp_path, 60.0)
    assert ok.model_dump() == PDFSimulator().simulate(linio2).model_dump()


def test_failures_in_a_row_and_in_all_are_bounded(tmp_path, fault_ledger):
    """FEFF fails for every candidate: the campaign stops at max_failures in a row, then at max_failed."""
    exe = fault_feff(tmp_path, [("*/work/*", "exit")])
    exafs = {**TINY_EXAFS, "sites": 1, "engine": str(exe)}
    fields = {
        "name": "always-fails",
        "targets": [{"technique": "exafs", "structure": str(DATA / "LiNiO2.cif"), "settings": exafs}],
        "budget": 8,
        "initial_size": 2,
        "batch_size": 2,
    }
    cfg = load_config(write_campaign(tmp_path, max_failures=3, **fields))
    fault_ledger.inject("feff_always_fails", "max_failures in a row")
    state = LocalCampaignRunner(progress=False).run(cfg)
    assert state.doc["stop_reason"] == "3 simulations in a row failed"
    assert len(state.evaluations("failed")) == 3 and state.n_used() == 0
    assert {e["failure_kind"] for e in state.evaluations("failed")} == {"simulator_error"}
    stop = "3 simulations in a row failed"
    fault_ledger.verify_campaign("feff_always_fails", state, stop_reason=stop)

    # the same campaign with the in-a-row limit off: the cap on failures in all stops it
    cfg = load_config(write_campaign(tmp_path, max_failures=0, max_failed=5, **fields))
    fault_ledger.inject("feff_always_fails", "max_failed in all")
    state = LocalCampaignRunner(progress=False).run(cfg)
    assert state.doc["stop_reason"] == "5 simulations failed in all (max_failed 5)"
    failed = state.evaluations("failed")
    assert len(failed) == 5 and [e["iteration"] for e in failed] == [0, 0, 0, 1, 1]
    assert len({e["fingerprint"] for e in failed}) == 5  # each retry is a new structure
    stop = "5 simulations failed in all (max_failed 5)"
    fault_ledger.verify_campaign("feff_always_fails", state, stop_reason=stop)
    assert store_check(state) == (0, 0, True)


def test_geometry_problem_names_the_pair(linio2):
    from aso_workflows.campaign.evaluate import geometry_problem

    assert geometry_problem(linio2) is None
    s = linio2.copy()
    s.translate_sites([2], s[3].coords - s[2].coords + np.array([0.2, 0, 0]), frac_coords=False)
    msg = geometry_problem(s)
    assert msg is not None and "atoms 2 (" in msg and "0.200 Å apart" in msg
