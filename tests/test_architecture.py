"""The structure's promises: light config, a registry that takes one module, pure Makers, honest failures,
one engine per campaign, the GPU-queue warning, one progress bar per phase."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from campaign_files import campaign_yaml

from aso_workflows.config import load_config
from aso_workflows.errors import InputError


def test_reading_a_campaign_file_imports_no_engine(tmp_path):
    """aso status/results/report read the campaign file: neither torch nor the simulators are loaded."""
    path = campaign_yaml(tmp_path, "light")
    code = (
        "import sys; from aso_workflows.config import load_config; "
        f"load_config({str(path)!r}, check_files=False); "
        "heavy = [m for m in ('torch', 'botorch', 'diffpy.pdffit2', 'feff10', 'jobflow') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("section", "field", "top"),
    [("proposal", "q", "batch_size"), ("proposal", "seed", "seed"), ("sampler", "seed", "seed")],
)
def test_fields_the_campaign_overrides_are_refused(tmp_path, section, field, top):
    path = campaign_yaml(tmp_path, "owned", **{section: {field: 3}})
    with pytest.raises(
        InputError, match=rf"field '{section}\.{field}': set by the campaign from its top-level '{top}'"
    ):
        load_config(path)


def test_an_optimizer_is_one_registered_class(tmp_path):
    from aso_workflows.optimizers import (
        CandidateProposal,
        Optimizer,
        optimizer_names,
        register_optimizer,
        registry,
    )
    from aso_workflows.settings import settings_dataclass

    @register_optimizer("keep-start")
    @settings_dataclass
    class KeepStart(Optimizer):
        """Proposes the start structure again (a test optimiser)."""

        repeats: int = 1
        section = "keep_start"

        def propose(self, ctx):
            return [CandidateProposal(structure=ctx.state.start)] * self.repeats

    try:
        assert "keep-start" in optimizer_names()
        cfg = load_config(campaign_yaml(tmp_path, "reg", optimizer="keep-start", keep_start={"repeats": 2}))
        assert cfg.section("keep_start") == KeepStart(repeats=2)
        made = registry.make_optimizer("keep-start", cfg)
        assert isinstance(made, KeepStart) and made.repeats == 2
        bad = campaign_yaml(tmp_path, "reg2", optimizer="keep-start", keep_start={"repeat": 2})
        with pytest.raises(
            InputError, match=r"field 'keep_start.repeat': unknown field; expected one of \['repeats'\]"
        ):
            load_config(bad)
    finally:
        registry._REGISTRY.pop("keep-start")


def test_a_campaign_whose_optimizer_finds_nothing_ends_saying_so(tmp_path):
    """An optimiser that proposes no candidate (nothing distinct left to simulate) does not keep the
    campaign spinning through empty iterations: after 3 in a row it ends, with the reason stored."""
    from aso_workflows.campaign.learn import EMPTY_ROUNDS
    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.optimizers import Optimizer, register_optimizer, registry
    from aso_workflows.settings import settings_dataclass

    @register_optimizer("finds-nothing")
    @settings_dataclass
    class FindsNothing(Optimizer):
        """Proposes nothing (a test optimiser)."""

        section = "finds_nothing"

        def propose(self, ctx):
            return []

    try:
        cfg = load_config(campaign_yaml(tmp_path, "empty", optimizer="finds-nothing", budget=8))
        state = LocalCampaignRunner(progress=False).run(cfg)
        # with a polish: the exact finish runs once after that stop, then the campaign ends
        polished = load_config(
            campaign_yaml(
                tmp_path,
                "empty-polish",
                optimizer="finds-nothing",
                budget=8,
                polish={"top": 1, "max_calls": 8},
            )
        )
        pstate = LocalCampaignRunner(progress=False).run(polished)
    finally:
        registry._REGISTRY.pop("finds-nothing")
    assert state.doc["status"] == "completed"
    assert state.doc["stop_reason"].startswith(f"no new candidate in {EMPTY_ROUNDS} iterations in a row")
    assert "4 of the budget left" in state.doc["stop_reason"]  # the start + 3 initial simulated
    assert state.n_used() == 4 and int(state.doc["iteration"]) == EMPTY_ROUNDS
    assert pstate.doc["status"] == "completed" and pstate.doc["stop_reason"].startswith("no new candidate")
    assert [e["kind"] for e in pstate.evaluations()][-1] == "polish" and pstate.n_used() == 5
    assert int(pstate.doc["iteration"]) == EMPTY_ROUNDS + 1  # ended right after the polish


def test_makers_are_pure(tmp_path):
    """Building the flows touches no store and no file; the store is created by the start job."""
    from aso_workflows.campaign.jobs import CampaignMaker, IterationMaker

    cfg = load_config(campaign_yaml(tmp_path, "pure"))
    flow = CampaignMaker().make(cfg, workdir=tmp_path / "out", inputs=None)
    assert [j.name for j in flow.jobs] == ["pure / start"]
    assert not (tmp_path / "out").exists()
    store = cfg.store_spec().as_dict()
    plan = {"exafs": [0, 3], "pdf": None}
    it = IterationMaker().make(store, "pure", 2, ["pure:0002:000", "pure:0002:001"], plan)
    kinds = sorted(
        j.metadata["_aso"]["kind"] for f in it.jobs for j in (f.jobs if hasattr(f, "jobs") else [f])
    )
    assert kinds.count("absorber") == 4 and kinds.count("average") == 2 and kinds.count("simulate") == 2
    assert kinds.count("record") == 2 and kinds.count("train") == 1 and kinds.count("propose") == 1
    assert not (tmp_path / "out").exists()


def test_a_bug_in_a_job_is_a_job_error_not_a_failed_simulation(tmp_path, monkeypatch):
    """A simulator that raises something other than a simulator error: the job fails, its traceback is
    kept, the candidate is recorded as job_error (never simulator_error or lost_job)."""
    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.spectra.pdf import PDFSimulator

    original = PDFSimulator.simulate
    calls = {"n": 0}

    def flaky(self, structure, workdir=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the target is simulated first; then the start, then a perturbation
            raise ZeroDivisionError("a bug in the engine wrapper")
        return original(self, structure, workdir)

    monkeypatch.setattr(PDFSimulator, "simulate", flaky)
    cfg = load_config(campaign_yaml(tmp_path, "bug", optimizer="random", budget=5))
    runner = LocalCampaignRunner(progress=False)
    state = runner.run(cfg)
    (failed,) = state.evaluations("failed")
    assert (
        failed["failure_kind"] == "job_error"
        and "ZeroDivisionError: a bug in the engine wrapper" in failed["error"]
    )
    assert "Traceback" in failed["traceback"] and "flaky" in failed["traceback"]
    assert [e.key for e in runner.errors] == ["record"] and state.doc["status"] == "completed"
    assert "ZeroDivisionError" in (cfg.output_dir / "errors.log").read_text()
    assert state.n_used() == cfg.budget  # the campaign replaced the candidate and went on


def test_a_spectrum_from_another_engine_is_refused(tmp_path):
    from aso_workflows.campaign.learn import init_campaign, read_inputs
    from aso_workflows.campaign.state import get_db
    from aso_workflows.spectra.spectrum import Spectrum

    cfg = load_config(campaign_yaml(tmp_path, "engine"))
    state = init_campaign(cfg, get_db(cfg.store_spec()), tmp_path / "out", read_inputs(cfg))
    assert state.config.targets[0].settings["engine"] == "pdffit2"  # "auto" resolved once, stored
    target = state.targets["pdf"]
    foreign = Spectrum.model_validate(
        {**target.model_dump(), "settings": {**target.settings, "engine": "srreal"}}
    )
    with pytest.raises(InputError, match="made with engine 'srreal', the campaign uses 'pdffit2'"):
        state.check_engines({"pdf": foreign})
    state.check_engines({"pdf": target})


def test_training_on_the_gpu_queue_without_cuda_warns_or_fails(monkeypatch):
    import torch
    from jobflow import Job

    from aso_workflows.campaign.learn import device_warnings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="surrogate.device: 'cuda' asked for, but no CUDA device is visible"):
        device_warnings("cuda")
    assert device_warnings("auto") == []  # not in a GPU-queue Slurm job: nothing to say

    from jobflow import CURRENT_JOB

    job = Job(function=print)
    job.update_config({"manager_config": {"_category": "gpu"}})
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    CURRENT_JOB.job = job
    try:
        (warning,) = device_warnings("auto")
    finally:
        CURRENT_JOB.reset()
    assert (
        "routed to the GPU queue (Slurm job 42, partition gpu" in warning and "trained on the CPU" in warning
    )


def test_quiet_run_prints_no_bars_and_a_run_prints_one_bar_per_phase(tmp_path):
    """Run in a pseudo-terminal (bars only draw on terminals): --quiet draws none; otherwise the campaign bar
    and the phase bar are the only two bars (tqdm's position 0 and 1), however many phases ran."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    path = campaign_yaml(tmp_path, "bars", budget=6)
    aso = str(Path(sys.executable).parent / "aso")

    def run(*flags: str) -> str:
        out = b""
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(aso, [aso, "run", str(path), *flags])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160 × 40 terminal
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.waitpid(pid, 0)
        return out.decode(errors="replace")

    quiet = run("--quiet")
    assert "sim/s" not in quiet and "it/s" not in quiet and "%|" not in quiet
    path.with_suffix(".yaml").write_text(path.read_text().replace("name: bars", "name: bars2"))
    loud = run()
    assert "bars2" in loud and "%|" in loud
    assert "surrogate (" in loud and "proposal (" in loud  # the phases drew on the phase bar

    # into a log file: no phase bar, and the campaign bar redrawn rarely (not a line per step)
    path.write_text(path.read_text().replace("name: bars2", "name: bars3"))
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        subprocess.run([aso, "run", str(path)], stderr=fh, stdout=subprocess.DEVNULL, check=True)
    text = log.read_text()
    assert "surrogate (" not in text and "proposal (" not in text
    assert "bars3" in text and text.count("\r") + text.count("\n") <= 6, text
