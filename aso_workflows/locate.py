"""Finding an existing campaign: by its YAML file, or by its name and a store.

The commands (``aso status``, ``results``, ``report``, ``resume``) and
:meth:`aso_workflows.results.Campaign.open` take a campaign as either

- a campaign YAML file: its ``store:`` section (default: the embedded store in ``runs/<name>/store``), or
- a campaign name, with the store from ``--store`` (a ``mongodb://`` URI, or the folder of an embedded
  store), else the ``ASO_STORE`` environment variable, else ``runs/<name>/store`` in the current folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aso_workflows.errors import InputError
from aso_workflows.store import StoreSpec

__all__ = ["CampaignRef", "resolve_campaign", "store_spec_from"]


@dataclass
class CampaignRef:
    """A campaign located: its name, the store holding it and (when given by file) its config."""

    name: str
    spec: StoreSpec
    config: Any = None  # the CampaignConfig when the campaign was given by its YAML file


def store_spec_from(store: str, database: str = "aso") -> StoreSpec:
    """``mongodb://…`` / ``mongodb+srv://…`` → MongoDB; ``mongomock://NAME`` → in-process; else a folder."""
    if store.startswith(("mongodb://", "mongodb+srv://")):
        return StoreSpec(kind="mongodb", uri=store, database=database)
    if store.startswith("mongomock://"):
        return StoreSpec(kind="mongomock", uri=store, database=database)
    path = Path(store).expanduser()
    if not path.is_dir():
        raise InputError(
            "--store", f"no embedded store folder at {path} (expected a folder or a mongodb:// URI)"
        )
    return StoreSpec(kind="embedded", path=str(path.resolve()), database=database)


def resolve_campaign(campaign: str, store: str | None = None, database: str = "aso") -> CampaignRef:
    """Locate ``campaign`` (a YAML file or a name) and the store that holds it (see module docstring)."""
    store = store or os.environ.get("ASO_STORE") or None
    p = Path(campaign)
    if p.suffix.lower() in (".yaml", ".yml") or p.is_file():
        from aso_workflows.config import load_config

        cfg = load_config(p, check_files=False)
        spec = store_spec_from(store, database) if store else cfg.store_spec()
        return CampaignRef(name=cfg.name, spec=spec, config=cfg)
    if store:
        return CampaignRef(name=campaign, spec=store_spec_from(store, database))
    default = Path("runs") / campaign / "store"
    if not default.is_dir():
        raise InputError(
            "CAMPAIGN",
            f"{campaign!r} is neither a campaign file nor a campaign with a store in {default}; "
            "give the campaign YAML file or --store URI|FOLDER",
        )
    return CampaignRef(name=campaign, spec=store_spec_from(str(default), database))
