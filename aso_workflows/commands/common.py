"""How the commands that act on an existing campaign find it: by YAML file, or by name and store.

``aso status``, ``aso results``, ``aso report`` and ``aso resume`` take ``CAMPAIGN`` as either

- a campaign YAML file: its ``store:`` section (default: the embedded store in ``runs/<name>/store``), or
- a campaign name, with the store from ``--store`` (a ``mongodb://`` URI, or the folder of an embedded
  store), else the ``ASO_STORE`` environment variable, else ``runs/<name>/store`` in the current folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from aso_workflows.errors import InputError
from aso_workflows.store import StoreSpec

__all__ = ["StoreOption", "DatabaseOption", "CampaignRef", "resolve_campaign", "store_spec_from"]

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Campaign store: a mongodb:// URI or an embedded store folder (default: $ASO_STORE, "
        "else the campaign file's store, else runs/<name>/store).",
        show_default=False,
    ),
]
DatabaseOption = Annotated[str, typer.Option("--database", help="MongoDB database name.")]


@dataclass
class CampaignRef:
    """A campaign located: its name, the store holding it and (when given by file) its config."""

    name: str
    spec: StoreSpec
    config: object | None = None  # CampaignConfig when CAMPAIGN was a YAML file


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

        cfg = load_config(p)
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
