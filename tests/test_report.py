"""The campaign report: structure descriptors, the files written, and the page in headless Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from results_fixtures import MOCK_URI, build, copy_to_mongomock

from aso_workflows.report import bond_angles, first_shell_cutoffs, neighbour_distances
from aso_workflows.results import Campaign

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("report.png", "report_convergence.png", "report_spectra.png", "report_structure.png")


class _Page(HTMLParser):
    """Headings, image sources and table rows (by table id) of a page."""

    def __init__(self):
        super().__init__()
        self.headings: list[str] = []
        self.images: list[dict] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._tag = None
        self._table = ""
        self._row: list[str] | None = None
        self._in_body = False
        self._cell = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("h1", "h2"):
            self._tag = tag
            self.headings.append("")
        elif tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = a.get("id") or ""
            self.rows[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self._tag = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._row is not None:
            self._row.append(self._cell.strip())
        elif tag == "tr" and self._row is not None:
            self.rows[self._table].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._tag:
            self.headings[-1] += data
        if self._row is not None:
            self._cell += data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def aso(tmp_path_factory) -> Campaign:
    built = build("embedded", tmp_path_factory.getbasetemp() / "results-campaigns")
    return Campaign.open(built.name, built.spec)


@pytest.fixture(scope="module")
def report(aso, tmp_path_factory) -> dict[str, Path]:
    return aso.write_report(tmp_path_factory.mktemp("report"), n_best=4)


def test_bond_angles_of_rock_salt_and_diamond(nio, diamond):
    cut = first_shell_cutoffs(nio)
    assert set(cut) == {"Ni", "O"} and cut["Ni"] == pytest.approx(1.2 * 4.176 / 2, rel=1e-3)
    angles = bond_angles(nio, cut)  # 8 atoms, each with 6 octahedral neighbours: 12 × 90° and 3 × 180°
    assert len(angles) == 8 * 15
    assert np.sum(np.isclose(angles, 90.0, atol=1e-6)) == 8 * 12
    assert np.sum(np.isclose(angles, 180.0, atol=1e-6)) == 8 * 3
    tetra = bond_angles(diamond, first_shell_cutoffs(diamond))  # 4 neighbours: 6 × 109.47°
    assert len(tetra) == 8 * 6 and np.allclose(tetra, np.degrees(np.arccos(-1 / 3)), atol=1e-6)
    assert neighbour_distances(nio, 2.2).min() == pytest.approx(4.176 / 2, rel=1e-3)


def test_distortion_shows_in_bond_angles(linio2):
    """A Jahn–Teller-like distortion spreads LiNiO2's O–Ni–O angles away from the ideal values."""
    cut = first_shell_cutoffs(linio2)
    ideal = bond_angles(linio2, cut)
    rng = np.random.default_rng(1)
    moved = linio2.copy()
    for i in range(len(moved)):
        moved.translate_sites([i], rng.normal(0, 0.06, 3), frac_coords=False)
    distorted = bond_angles(moved, cut)
    assert len(np.unique(np.round(ideal, 3))) < len(np.unique(np.round(distorted, 3)))
    assert np.std(distorted) != pytest.approx(np.std(ideal), rel=1e-3)


def test_report_writes_every_file(aso, report):
    out = report["report_html"].parent
    for name in (*FIGURES, "report_surrogate.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    assert [p.name for k, p in report.items() if k.startswith("best_")] == [
        f"best_0{i}.cif" for i in range(1, 5)
    ]
    assert len((out / "history.csv").read_text().strip().splitlines()) == 1 + 8


def test_report_html_is_self_contained(aso, report):
    text = report["report_html"].read_text()
    page = parse(text)
    assert page.headings[0] == f"Campaign {aso.name}"
    for h in (
        "Best mismatch vs simulations",
        "Spectra: target, start and best",
        "Neighbour distances and bond angles",
    ):
        assert h in page.headings
    assert "Surrogate accuracy per iteration" in page.headings and "Best structures" in page.headings
    # every figure is embedded (a PDF campaign: also the PDF fit plot); no script and no file or URL the
    # page needs besides itself
    assert len(page.images) == 5 and "PDF fit of the best structure" in page.headings
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert "<script" not in text and not re.search(r"src=['\"](?!data:)", text)
    best = page.rows["best-table"]
    assert [r[0] for r in best] == ["1", "2", "3", "4"]
    assert [r[1] for r in best] == [b.ref for b in aso.best(4)]
    assert float(best[0][3]) == pytest.approx(aso.best(1)[0].objective, rel=1e-3)
    accuracy = aso.surrogate_accuracy()
    assert [int(r[0]) for r in page.rows["surrogate-table"]] == accuracy["iteration"].tolist()


def test_report_of_random_campaign_on_mongomock(tmp_path_factory, tmp_path):
    built = build("mongomock", tmp_path_factory.getbasetemp() / "results-campaigns")
    paths = Campaign.open(built.name, store=MOCK_URI).write_report(tmp_path, n_best=2)
    assert "surrogate_png" not in paths and not (tmp_path / "report_surrogate.png").exists()
    page = parse(paths["report_html"].read_text())
    assert len(page.images) == 4 and len(page.rows["best-table"]) == 2
    assert "without one" in paths["report_html"].read_text()


@pytest.mark.browser
def test_report_renders_in_headless_chromium(aso, report):
    from browser import ARTIFACTS, render

    shot = ARTIFACTS / "report" / "campaign_report.png"
    dom = render(report["report_html"].resolve().as_uri(), screenshot=shot, size=(1300, 2600))
    page = parse(dom)
    assert page.headings[0] == f"Campaign {aso.name}"
    assert "Surrogate accuracy per iteration" in page.headings
    assert len(page.rows["best-table"]) == 4 and len(page.images) == 5
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] > 1000 and pixels.std() > 0.05  # a drawn page, not a blank one


def test_report_lists_failed_evaluations_with_reasons(tmp_path_factory, tmp_path):
    """A failure recorded by the real record_evaluation appears in the report's failed table."""
    from pymatgen.core import Structure

    from aso_workflows.campaign.evaluate import record_evaluation
    from aso_workflows.campaign.state import CampaignState

    built = build("embedded", tmp_path_factory.getbasetemp() / "results-campaigns")
    spec = copy_to_mongomock(built.spec, "mongomock://report-faults")
    c = Campaign.open(built.name, spec)
    state = CampaignState.load(c.db, c.name)
    moved = state.start.cart_coords + np.random.default_rng(2).normal(0, 0.05, (len(state.start), 3))
    (pid,) = state.add_proposals(
        3,
        [
            {
                "structure": Structure(
                    state.start.lattice, state.start.species, moved, coords_are_cartesian=True
                )
            }
        ],
    )
    failure = {
        "status": "failed",
        "error": "SimulationError: engine crashed",
        "failure_kind": "simulator_error",
    }
    record_evaluation(state, pid, {"pdf": failure})
    paths = c.write_report(tmp_path)
    page = parse(paths["report_html"].read_text())
    assert "Failed evaluations" in page.headings
    (row,) = page.rows["failed-table"]
    assert row[:3] == ["3:0", "failed", "simulator_error"] and "engine crashed" in row[3]
    assert "1 failed" in paths["report_html"].read_text()
