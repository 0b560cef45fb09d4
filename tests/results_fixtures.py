"""Small real campaigns shared by the results, report and monitoring-CLI tests.

Built once per test session (memoised here, whichever test module asks first) with the real local runner
on tiny LiNiO2 PDF settings:

- ``embedded``: the ``aso`` optimizer (surrogate ensembles trained, predictions stored) on the embedded
  montydb store;
- ``mongomock``: the ``random`` optimizer run on an in-process mongomock store (``mongomock://results``);
- :func:`copy_to_mongomock` copies a stored campaign into a fresh mongomock database, so the same documents
  can be read through both backends and compared, and tests that add failures leave the shared ones alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from campaign_files import campaign_yaml

from aso_workflows.store import COLLECTIONS, StoreSpec, open_store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "linio2_jt_pdf"
MOCK_URI = "mongomock://results"


@dataclass
class Built:
    name: str
    config_path: Path
    spec: StoreSpec
    output: Path


_BUILT: dict[str, Built] = {}


def _write(root: Path, name: str, **fields) -> Path:
    defaults = {"budget": 8, "seed": 3, "proposal": {"n_starts": 8, "steps": 10}, "output": str(root / name)}
    return campaign_yaml(root, name, **{**defaults, **fields})


def build(kind: str, root: Path) -> Built:
    """The shared campaign ``kind`` (``embedded`` or ``mongomock``), run once per session."""
    if kind in _BUILT:
        return _BUILT[kind]
    import torch

    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.config import load_config

    if kind == "embedded":
        path = _write(root, "res-aso")
    else:
        path = _write(root, "res-rand", optimizer="random", store={"kind": "mongomock", "uri": MOCK_URI})
    cfg = load_config(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # tiny models: one thread is as fast and does not fight the other engineers' jobs
    try:
        LocalCampaignRunner(progress=False).run(cfg)
    finally:
        torch.set_num_threads(threads)
    _BUILT[kind] = Built(name=cfg.name, config_path=path, spec=cfg.store_spec(), output=cfg.output_dir)
    return _BUILT[kind]


def copy_to_mongomock(spec: StoreSpec, uri: str, database: str = "aso") -> StoreSpec:
    """Copy every collection of the store ``spec`` into the (emptied) mongomock database ``uri``/``database``."""
    return copy_store(spec, StoreSpec(kind="mongomock", uri=uri, database=database))


def copy_store(spec: StoreSpec, target: StoreSpec) -> StoreSpec:
    """Copy every collection of the store ``spec`` into the (emptied) store ``target``."""
    src = open_store(spec)
    dst = open_store(target)
    for name in COLLECTIONS:
        dst.db[name].delete_many({})
        docs = list(src.db[name].find({}))
        if docs:
            dst.db[name].insert_many(docs)
    return target


@pytest.fixture(scope="session")
def embedded(tmp_path_factory) -> Built:
    """The ``aso`` campaign on the embedded store (registered as a plugin in conftest.py)."""
    return build("embedded", tmp_path_factory.getbasetemp() / "results-campaigns")


@pytest.fixture(scope="session")
def mocked(tmp_path_factory) -> Built:
    """The ``random`` campaign on in-process mongomock."""
    return build("mongomock", tmp_path_factory.getbasetemp() / "results-campaigns")
