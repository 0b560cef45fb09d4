"""Campaign YAML validation: good files load; bad fields give one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from aso_workflows.config import load_config
from aso_workflows.errors import InputError

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.parametrize("name", ["linio2_jt_pdf", "linio2_jt_exafs", "amorphous_carbon_pdf"])
def test_examples_validate(name):
    cfg = load_config(EXAMPLES / name / "campaign.yaml")
    assert cfg.start.is_file()
    for t in cfg.targets:
        path = t.structure or t.file  # exactly one of the two (config.py refuses neither and both)
        assert path is not None and path.is_file()
    assert cfg.budget > cfg.initial_size


def _write(tmp_path, text: str) -> Path:
    (tmp_path / "s.cif").write_text((EXAMPLES / "linio2_jt_pdf" / "start.cif").read_text())
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


GOOD = "name: t\nstart: s.cif\ntargets: [{technique: pdf, structure: s.cif}]\nbudget: 10\ninitial_size: 3\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("budget: 10", "budget: 0"), "field 'budget'"),
        (GOOD.replace("budget: 10", "budget: -5"), "field 'budget'"),
        (GOOD.replace("technique: pdf", "technique: raman"), "field 'targets[0].technique'"),
        (GOOD + "surrogate: {epochz: 3}\n", "field 'surrogate.epochz'"),
        (GOOD + "surrogate: {epochs: many}\n", "field 'surrogate.epochs'"),
        (GOOD + "colour: blue\n", "field 'colour'"),
        (GOOD.replace("structure: s.cif", "structure: s.cif, file: x.dat"), "exactly one of"),
        (GOOD.replace("technique: pdf", "technique: exafs"), "absorber"),
        (GOOD.replace("start: s.cif", "start: missing.cif"), "do not exist"),
        (GOOD.replace("initial_size: 3", "initial_size: 30"), "must exceed initial_size"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_config_one_line(tmp_path, text, expected):
    p = _write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(p) in msg
    assert expected in msg


def test_relative_paths_resolve_against_yaml(tmp_path, monkeypatch):
    p = _write(tmp_path, GOOD)
    monkeypatch.chdir("/")
    cfg = load_config(p)
    assert cfg.start == tmp_path / "s.cif"
    assert cfg.store_spec().kind == "embedded"
