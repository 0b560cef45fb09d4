"""``aso simulate`` through typer's CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from aso_workflows.cli import app, parse_settings
from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Spectrum

runner = CliRunner()


def test_help_lists_simulate():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "simulate" in result.output
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0 and "--technique" in result.output and "--setting" in result.output


def test_simulate_pdf_json(data_dir):
    result = runner.invoke(
        app, ["simulate", str(data_dir / "LiNiO2.cif"), "--technique", "pdf", "-s", "biso=0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    spec = Spectrum.model_validate_json(result.stdout)
    assert spec.technique == "pdf" and len(spec.values) == 900
    assert spec.settings["biso"] == 0.5
    first = spec.x[np.argmax(np.where((spec.x > 1.5) & (spec.x < 2.5), spec.y, -np.inf))]
    assert first == pytest.approx(1.970, abs=0.02)


def test_simulate_summary_and_plot(tmp_path, data_dir):
    png = tmp_path / "plots" / "nio.png"
    result = runner.invoke(app, ["simulate", str(data_dir / "NiO.cif"), "-t", "pdf", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "900 points" in result.stdout
    assert "pdffit2" in result.stdout or "srreal" in result.stdout
    assert "peaks" in result.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_bad_cif_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 3.0\nthis is not a CIF loop\n")
    result = runner.invoke(app, ["simulate", str(bad), "--technique", "pdf"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.cif" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-t", "pdf", "-s", "nonsense=1"], "unknown setting"),
        (["-t", "pdf", "-s", "qmax"], "key=value"),
        (["-t", "pdf", "-s", "rmin=5", "-s", "rmax=2"], "rmax"),
        (["-t", "xrd"], "unknown technique"),
        (["-t", "exafs"], "--absorber"),
        (["-t", "pdf", "--absorber", "Ni"], "--absorber"),
    ],
)
def test_user_errors_exit_2(data_dir, args, expected):
    result = runner.invoke(app, ["simulate", str(data_dir / "NiO.cif"), *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_parse_settings_reads_yaml_scalars():
    assert parse_settings(["qmax=20", "engine=pdffit2", "flag=true", "sites=[0, 3]"]) == {
        "qmax": 20,
        "engine": "pdffit2",
        "flag": True,
        "sites": [0, 3],
    }
    with pytest.raises(InputError):
        parse_settings(["=3"])


def test_run_help_lists_every_registered_optimizer_with_its_summary():
    """The --optimizer help is derived from the registry: a new optimiser shows up by registering alone."""
    from aso_workflows.commands.run import optimizers_help
    from aso_workflows.optimizers import Optimizer, register_optimizer, registry

    @register_optimizer("toy-help")
    class ToyHelp(Optimizer):
        """Proposes nothing (a test optimiser
        whose summary spans two lines).

        Not in the help: a second paragraph."""

        def propose(self, ctx):
            return []

    try:
        text = optimizers_help()
        summaries = registry.optimizer_summaries()
        assert set(summaries) == set(registry.optimizer_names()) and len(summaries) >= 8
        for name, summary in summaries.items():
            assert summary and f"{name}: {summary}" in text
        assert "toy-help: Proposes nothing (a test optimiser whose summary spans two lines)" in text
        assert "second paragraph" not in text
        result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "2000"})
        assert result.exit_code == 0, result.output
        assert "toy-help: Proposes nothing" in result.output and "rmc: Reverse Monte Carlo" in result.output
    finally:
        registry._REGISTRY.pop("toy-help")
