"""The stored documents: the pydantic models of ``aso_workflows.schemas`` and ``docs/results.md`` agree,
and documents written through them carry only plain JSON types."""

from __future__ import annotations

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
        iteration=np.int64(1),
        technique="pdf",
        n_train=np.int32(4),
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
        schemas.SimulationResult(status="failed", failure_kind="crashed")
