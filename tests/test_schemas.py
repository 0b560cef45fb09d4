"""The stored documents: the pydantic models of ``aso_workflows.schemas`` and ``docs/results.md`` agree,
and documents written through them carry only plain JSON types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from aso_workflows import schemas

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"
MODELS = {
    "campaigns": schemas.CampaignDoc,
    "evaluations": schemas.EvaluationDoc,
    "spectra": schemas.SpectrumDoc,
    "models": schemas.ModelDoc,
    "proposals": schemas.ProposalDoc,
    "job_errors": schemas.JobErrorDoc,
    "leases": schemas.LeaseDoc,
}


def documented_fields() -> dict[str, set[str]]:
    """``{collection: {top-level field names}}`` from the first column of each collection's table."""
    text = DOC.read_text()
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"^### `(\w+)` — .*?\n\n(\| field .*?)\n\n", text, flags=re.S | re.M):
        fields = set()
        for row in m.group(2).splitlines()[2:]:
            first = row.split("|")[1]
            fields |= {name.split(".")[0] for name in re.findall(r"`([^`]+)`", first)}
        out[m.group(1)] = fields
    return out


def model_fields(model) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_every_collection_is_documented_with_exactly_its_model_fields():
    documented = documented_fields()
    assert set(documented) == set(MODELS)
    for collection, model in MODELS.items():
        assert documented[collection] == model_fields(model), collection


def test_documents_are_plain_json_and_refuse_unknown_fields():
    doc = schemas.ModelDoc(
        _id="c:0001:pdf",
        campaign="c",
        iteration=np.int64(1),  # type: ignore[arg-type]  # numpy scalars on purpose: stored as int
        technique="pdf",
        n_train=np.int32(4),  # type: ignore[arg-type]  # (as above)
        metrics={
            "heldout_mae": np.float32(0.5),
            "members": [{"mae": np.float64(0.4)}],
            "curve": np.arange(3),
        },
        weights="file:c/model.pt",
        device="cpu",
        cuda=False,
        seconds=np.float64(1.5),
    ).to_mongo()
    types = set()

    def walk(v):
        types.add(type(v))
        if isinstance(v, dict):
            [walk(x) for x in v.values()]
        elif isinstance(v, list):
            [walk(x) for x in v]

    walk(doc)
    assert types <= {dict, list, str, int, float, bool, type(None)}
    assert doc["_id"] == "c:0001:pdf" and doc["metrics"]["curve"] == [0, 1, 2]
    with pytest.raises(ValidationError, match="n_trian"):
        schemas.ModelDoc.model_validate({**doc, "n_trian": 3})


def test_failure_kinds_are_the_schema_literal():
    import typing

    assert set(typing.get_args(schemas.FailureKind)) == set(schemas.FAILURE_KINDS)
    with pytest.raises(ValidationError):
        schemas.SimulationResult(status="failed", failure_kind="crashed")  # type: ignore[arg-type]  # a bad value on purpose


def test_structures_are_typed_and_written_back_exactly_as_pymatgen_wrote_them():
    from pymatgen.core import Structure

    s = Structure.from_file(str(Path(__file__).resolve().parents[1] / "aso_workflows" / "data" / "NiO.cif"))
    s.add_oxidation_state_by_element({"Ni": 2, "O": -2})
    written = json.loads(json.dumps(s.as_dict()))  # as stored: tuples are lists
    written["sites"][0]["species"][0]["occu"] = 1  # an integer occupancy (CIF-read stores) stays an integer
    del written["sites"][1]["label"]  # a key pymatgen left out stays out
    doc = schemas.StructureDoc.model_validate(written)
    assert isinstance(doc.sites[0].species[0], schemas.SpeciesDoc) and doc.sites[0].species[0].element == "Ni"
    assert doc.lattice.matrix[0][0] == pytest.approx(s.lattice.matrix[0][0])
    back = doc.model_dump(mode="json", by_alias=True)
    assert back == written and type(back["sites"][0]["species"][0]["occu"]) is int
    assert "label" not in back["sites"][1] and list(back) == list(written)
    assert doc.to_pymatgen() == s
    with pytest.raises(ValidationError):
        schemas.StructureDoc.model_validate({**written, "sites": [{"abc": [0, 0, 0]}]})  # no species
    # a nuisance fit's refined structure is the same typed document, written exactly as pymatgen wrote it
    fit = schemas.FitDoc(
        technique="pdf", goodness_name="Rw", goodness=0.1, mse=0.01, status="converged", structure=written
    )
    assert isinstance(fit.structure, schemas.StructureDoc)
    assert fit.model_dump(mode="json", by_alias=True)["structure"] == written
    assert schemas.StructureDoc.from_pymatgen(s).model_dump(mode="json", by_alias=True) == json.loads(
        json.dumps(s.as_dict())
    )
    prop = schemas.ProposalDoc(
        _id="c:0001:000",
        campaign="c",
        iteration=1,
        candidate=0,
        kind="aso",
        structure=written,
        fingerprint="f",
    )
    assert prop.to_mongo()["structure"] == written


def test_spectra_in_documents_are_the_spectrum_model():
    from aso_workflows.spectra.spectrum import Spectrum

    spec = Spectrum(
        technique="pdf", grid=schemas.Grid(name="r", unit="Å", values=[1.0, 2.0]), values=[0.1, 0.2]
    )
    assert isinstance(spec, schemas.SpectrumData)
    doc = schemas.SpectrumDoc(_id="f:pdf:k", fingerprint="f", technique="pdf", spectrum=spec)
    assert doc.to_mongo()["spectrum"] == spec.model_dump(mode="json")
    with pytest.raises(ValidationError, match="grid has 2 points"):
        schemas.SpectrumDoc(
            _id="f:pdf:k",
            fingerprint="f",
            technique="pdf",
            spectrum={**spec.model_dump(), "values": [1.0]},  # type: ignore[arg-type]  # a bad dict on purpose
        )


def test_partial_updates_are_built_from_the_model():
    assert schemas.CampaignDoc.set_fields(status="completed", n_used=np.int64(7)) == {
        "status": "completed",
        "n_used": 7,
    }
    assert schemas.ProposalDoc.set_fields(status="failed", evaluation_id="e") == {
        "status": "failed",
        "evaluation_id": "e",
    }
    with pytest.raises(ValidationError, match="no attribute 'stauts'"):
        schemas.CampaignDoc.set_fields(stauts="completed")
    with pytest.raises(ValidationError, match="status"):
        schemas.CampaignDoc.set_fields(status="finished")  # not one of the literal's values
    with pytest.raises(ValidationError):
        schemas.LeaseDoc.set_fields(expires="soon")


def test_partial_updates_inside_embedded_documents_are_built_from_the_models():
    """The Slurm controller's Firework ids in a job's provenance: dotted ``$set`` keys from the models,
    the given fields only (``None`` included), validated; a provenance is written without them before."""
    ran = schemas.Provenance(fw_id=7, slurm_node=None)
    assert schemas.EvaluationDoc.set_embedded("provenance.pdf", ran) == {
        "provenance.pdf.fw_id": 7,
        "provenance.pdf.slurm_node": None,
    }
    assert schemas.ModelDoc.set_embedded("provenance", schemas.Provenance(fw_id=3)) == {"provenance.fw_id": 3}
    with pytest.raises(ValidationError, match="fw_id"):
        schemas.Provenance(fw_id="seven")  # type: ignore[arg-type]  # a bad value on purpose
    for doc, path in ((schemas.EvaluationDoc, "provenance"), (schemas.ModelDoc, "provenance.pdf")):
        with pytest.raises(ValueError, match="a key only for a mapping field"):
            doc.set_embedded(path, ran)
    with pytest.raises(ValueError, match="EvaluationDoc.fit holds no Provenance"):
        schemas.EvaluationDoc.set_embedded("fit.pdf", ran)
    fresh = schemas.Provenance(host="n1", slurm_job_id="42").model_dump(mode="json")
    assert "fw_id" not in fresh and "slurm_node" not in fresh and fresh["slurm_job_id"] == "42"
    annotated = schemas.Provenance.model_validate({**fresh, "fw_id": 7, "slurm_node": None})
    assert annotated.model_dump(mode="json") == {**fresh, "fw_id": 7, "slurm_node": None}  # kept as read
