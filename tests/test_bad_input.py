"""Fault injection, bad input: every kind of bad input of issue 7, fed through the real entry points.

Each case is fed to ``aso run`` / ``aso resume`` / ``aso simulate`` / ``aso submit`` (typer's CliRunner, in
process) or to the Python API, most of them against an EXISTING campaign store (a tiny random campaign run
once per module). A case counts as recovered when

- the command exits with code 2 and prints exactly one stderr line ``error: ...``, no traceback;
- the line names the file or field and says what was expected (the ``needles`` of the case);
- the existing campaign's store is untouched: the same evaluation ids, proposals, spectra, models and
  the same campaign document (so nothing was lost or duplicated).

Counts go to the fault ledger (``tests/fault_ledger.py``): pytest prints them and writes
``test-artifacts/faults.json``. Unreachable MongoDB, refused credentials and passwords in outputs are in
``tests/test_access.py``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from campaign_files import campaign_yaml
from typer.testing import CliRunner

from aso_workflows.cli import app
from aso_workflows.errors import InputError
from aso_workflows.store import StoreSpec, open_store

EXAMPLE = Path(__file__).parents[1] / "examples" / "linio2_jt_pdf"
LAUNCHPAD_DIR = Path(__file__).parents[1] / "launchpad"
NAME = "existing"

runner = CliRunner()


# ---- the existing campaign --------------------------------------------------------------------------
@dataclass
class Existing:
    """A finished tiny campaign: its YAML, its fields, its folder and its embedded store."""

    folder: Path
    yaml: Path
    doc: dict
    store: Path
    target_rows: list[str]  # "r G" lines of the target's PDF on the simulator grid (for target files)

    def variant(self, stem: str, **fields) -> Path:
        """A campaign file with the same name and store as the existing one, some fields changed."""
        doc = json.loads(json.dumps(self.doc))
        doc.update(fields)
        p = self.folder / f"{stem}.yaml"
        p.write_text(yaml.safe_dump(doc))
        return p

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.folder / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p

    def target(self, name: str, rows: list[str]) -> dict:
        """A PDF target entry reading ``rows`` from a file."""
        return {"technique": "pdf", "file": str(self.file(name, "\n".join(rows) + "\n"))}


@pytest.fixture(scope="module")
def existing(tmp_path_factory) -> Existing:
    folder = tmp_path_factory.mktemp("bad_input")
    path = campaign_yaml(folder, NAME, budget=5, optimizer="random", seed=1, batch_size=None)
    doc = yaml.safe_load(path.read_text())
    result = runner.invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    sim = runner.invoke(app, ["simulate", str(EXAMPLE / "target.cif"), "-t", "pdf", "--json"])
    assert sim.exit_code == 0, sim.output
    spec = json.loads(sim.stdout)
    rows = [f"{x:.5f} {y:.6f}" for x, y in zip(spec["grid"]["values"], spec["values"], strict=True)]
    ex = Existing(folder=folder, yaml=path, doc=doc, store=folder / "out" / "store", target_rows=rows)
    assert snapshot(ex.store)["evaluations"], "the existing campaign stored no evaluation"
    return ex


def snapshot(store: Path) -> dict:
    """What the store holds: evaluation ids and fingerprints, counts, and the campaign documents."""
    db = open_store(StoreSpec(kind="embedded", path=str(store)))
    try:
        evals = list(db.evaluations.find({}))
        return {
            "evaluations": sorted(e["_id"] for e in evals),
            "fingerprints": sorted(f"{e['fingerprint']}:{e['status']}" for e in evals),
            "proposals": sorted(p["_id"] for p in db.proposals.find({})),
            "spectra": db.spectra.count_documents({}),
            "models": db.models.count_documents({}),
            "campaigns": sorted(json.dumps(c, sort_keys=True, default=str) for c in db.campaigns.find({})),
        }
    finally:
        db.close()


def lost_and_duplicated(before: dict, after: dict) -> tuple[int, int]:
    """Evaluations of ``before`` missing in ``after``; evaluations in ``after`` sharing one structure."""
    lost = len(set(before["evaluations"]) - set(after["evaluations"]))
    duplicated = len(after["fingerprints"]) - len(set(after["fingerprints"]))
    return lost, duplicated


def assert_clear_error(result, needles: list[str]) -> str:
    """Exit code 2, one ``error:`` line on stderr naming the file/field and what was expected."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def inject(fault_ledger, existing: Existing, kind: str, detail: str, args: list[str], needles: list[str]):
    """Feed one bad input to the CLI and check the error and the store; records it in the ledger."""
    fault_ledger.inject(kind, detail)
    before = snapshot(existing.store)
    result = runner.invoke(app, args)
    line = assert_clear_error(result, needles)
    after = snapshot(existing.store)
    lost, duplicated = lost_and_duplicated(before, after)
    fault_ledger.verify_unchanged(kind, before, after, f"{detail} -> {line}")
    assert (lost, duplicated) == (0, 0)
    assert after == before, "the bad input changed the existing campaign's store"
    return line


# ---- structures ------------------------------------------------------------------------------------
NO_ATOMS_CIF = (
    "data_empty\n_cell_length_a 3.0\n_cell_length_b 3.0\n_cell_length_c 3.0\n"
    "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
)
STRUCTURE_CASES = {
    "empty-cif": ("", ["empty.cif", "file is empty", "expected a structure file"]),
    "malformed-cif": (
        "data_broken\n_cell_length_a 3.0\nthis is not a CIF loop\n",
        ["malformed.cif", "could not be read as a structure", "expected a CIF"],
    ),
    "no-atoms-cif": (NO_ATOMS_CIF, ["no-atoms.cif", "could not be read as a structure", "expected a CIF"]),
    "binary-cif": (b"\x00\xff\xfe\x89PNG", ["binary.cif", "expected a CIF"]),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_bad_start_structure_on_existing_campaign(existing, fault_ledger, case):
    content, needles = STRUCTURE_CASES[case]
    cif = existing.file(f"{case.removesuffix('-cif')}.cif", content)
    yml = existing.variant(f"start-{case}", start=str(cif))
    inject(
        fault_ledger,
        existing,
        "bad-input:structure",
        f"aso run, start = {case}",
        ["run", str(yml), "-q"],
        needles,
    )


def test_missing_start_structure(existing, fault_ledger):
    yml = existing.variant("start-missing", start=str(existing.folder / "nowhere.cif"))
    needles = ["start-missing.yaml", "nowhere.cif", "do not exist"]
    inject(
        fault_ledger,
        existing,
        "bad-input:structure",
        "aso run, start missing",
        ["run", str(yml), "-q"],
        needles,
    )


@pytest.mark.parametrize("case", ["empty-cif", "malformed-cif"])
def test_bad_structure_to_simulate(existing, fault_ledger, case):
    content, needles = STRUCTURE_CASES[case]
    cif = existing.file(f"sim-{case.removesuffix('-cif')}.cif", content)
    needles = [cif.name, *needles[1:]]
    inject(
        fault_ledger,
        existing,
        "bad-input:structure",
        f"aso simulate {case}",
        ["simulate", str(cif), "-t", "pdf"],
        needles,
    )


def test_structure_without_the_absorber(existing, fault_ledger):
    """An EXAFS target whose absorber (Fe) is not in LiNiO2: refused when the campaign file is read."""
    target = {"technique": "exafs", "structure": str(EXAMPLE / "target.cif"), "settings": {"absorber": "Fe"}}
    yml = existing.variant("absorber-fe", targets=[target])
    needles = [
        "absorber-fe.yaml",
        "field 'targets[0].settings.absorber'",
        "no Fe",
        "expected one of its elements",
    ]
    inject(
        fault_ledger, existing, "bad-input:absorber", "aso run, absorber Fe", ["run", str(yml), "-q"], needles
    )
    # the same through aso simulate: names the option and the elements there are
    args = ["simulate", str(EXAMPLE / "start.cif"), "-t", "exafs", "--absorber", "Fe"]
    needles = ["absorber", "no Fe atoms", "LiNiO2", "expected one of its elements ['Li', 'Ni', 'O']"]
    inject(fault_ledger, existing, "bad-input:absorber", "aso simulate --absorber Fe", args, needles)


# ---- target spectra ----------------------------------------------------------------------------------
def _rows_with(rows: list[str], case: str) -> list[str]:
    r = list(rows)
    if case == "nan":
        r[10] = r[10].split()[0] + " nan"
    elif case == "inf":
        r[30] = r[30].split()[0] + " inf"
    elif case == "non-monotonic":
        r[20], r[21] = r[21], r[20]
    elif case == "duplicated-x":
        r[40] = r[39].split()[0] + " " + r[40].split()[1]
    elif case == "grid-mismatch":
        r = r[:300]  # r = 1 ... 4 Å but the simulator grid goes to 10 Å
    elif case == "one-column":
        r = [x.split()[0] for x in r]
    elif case == "text-row":
        r[5] = "this is not a number"
    elif case == "too-few-points":
        r = r[:3]
    return r


TARGET_CASES = {
    "nan": ["nan.gr", "line 11", "NaN"],
    "inf": ["inf.gr", "line 31", "infinite"],
    "non-monotonic": ["non-monotonic.gr", "line 22", "x is not increasing", "not sorted"],
    "duplicated-x": ["duplicated-x.gr", "line 41", "repeats the previous point"],
    "grid-mismatch": ["grid-mismatch.gr", "covers r in [1, 3.99] Å but the grid needs [1, 9.99] Å"],
    "one-column": ["one-column.gr", "line 1 has 1 column", "expected at least 2"],
    "text-row": ["text-row.gr", "line 6 is not numeric"],
    "too-few-points": ["too-few-points.gr", "only 3 data point(s)", "at least 5"],
}


@pytest.mark.parametrize("case", sorted(TARGET_CASES))
def test_bad_target_file_on_existing_campaign(existing, fault_ledger, case):
    target = existing.target(f"{case}.gr", _rows_with(existing.target_rows, case))
    yml = existing.variant(f"target-{case}", targets=[target])
    inject(
        fault_ledger,
        existing,
        "bad-input:target",
        f"aso run, target {case}",
        ["run", str(yml), "-q"],
        TARGET_CASES[case],
    )


@pytest.mark.parametrize(
    ("case", "content", "needles"),
    [
        ("empty", "", ["empty.dat", "no data rows", "expected whitespace- or comma-separated numbers"]),
        ("binary", b"\x00\x01\xff\xfe" * 10, ["binary.dat", "is not a text file", "expected"]),
    ],
)
def test_empty_or_binary_target_file(existing, fault_ledger, case, content, needles):
    target = {"technique": "pdf", "file": str(existing.file(f"{case}.dat", content))}
    yml = existing.variant(f"target-{case}", targets=[target])
    inject(
        fault_ledger,
        existing,
        "bad-input:target",
        f"aso run, target file {case}",
        ["run", str(yml), "-q"],
        needles,
    )


def test_good_target_file_passes_the_same_checks(existing):
    """The control: the unmodified rows are accepted (the checks above are not refusing everything)."""
    from aso_workflows.config import load_config

    target = existing.target("good.gr", existing.target_rows)
    cfg = load_config(existing.variant("target-good", targets=[target], name="good-target"))
    assert cfg.targets[0].file is not None


# ---- campaign file: technique, budget, fields --------------------------------------------------------
def test_unknown_technique(existing, fault_ledger):
    target = {"technique": "saxs", "structure": str(EXAMPLE / "target.cif")}
    yml = existing.variant("technique-saxs", targets=[target])
    needles = ["technique-saxs.yaml", "field 'targets[0].technique'", "'pdf', 'exafs' or 'xanes'"]
    inject(
        fault_ledger,
        existing,
        "bad-input:technique",
        "aso run, technique saxs",
        ["run", str(yml), "-q"],
        needles,
    )
    args = ["simulate", str(EXAMPLE / "start.cif"), "-t", "saxs"]
    needles = ["technique", "unknown technique 'saxs'", "expected one of ['pdf', 'exafs', 'xanes']"]
    inject(fault_ledger, existing, "bad-input:technique", "aso simulate -t saxs", args, needles)


def test_unknown_simulator_setting_and_read_option(existing, fault_ledger):
    target = {"technique": "pdf", "structure": str(EXAMPLE / "target.cif"), "settings": {"qmaxx": 20}}
    yml = existing.variant("setting-typo", targets=[target])
    needles = ["setting-typo.yaml", "field 'targets[0].settings'", "['qmaxx']", "pdf accepts"]
    inject(
        fault_ledger, existing, "bad-input:config", "aso run, setting qmaxx", ["run", str(yml), "-q"], needles
    )
    target = existing.target("options.gr", existing.target_rows) | {"read_options": {"colums": [0, 1]}}
    yml = existing.variant("option-typo", targets=[target])
    needles = ["option-typo.yaml", "field 'targets[0].read_options'", "['colums']", "expected some of"]
    inject(
        fault_ledger,
        existing,
        "bad-input:config",
        "aso run, read option colums",
        ["run", str(yml), "-q"],
        needles,
    )


@pytest.mark.parametrize(
    ("settings", "needles"),
    [
        ({"qmax": "abc"}, ["field 'targets[0].settings.qmax'", "should be a valid number"]),
        ({"rstep": 0}, ["field 'targets[0].settings.rstep'", "should be greater than 0"]),
    ],
)
def test_bad_simulator_setting_value(existing, fault_ledger, settings, needles):
    target = {"technique": "pdf", "structure": str(EXAMPLE / "target.cif"), "settings": settings}
    yml = existing.variant("setting-value", targets=[target])
    inject(
        fault_ledger, existing, "bad-input:config", f"setting {settings}", ["run", str(yml), "-q"], needles
    )


@pytest.mark.parametrize("budget", [0, -3])
def test_zero_or_negative_budget(existing, fault_ledger, budget):
    yml = existing.variant(f"budget{budget}", budget=budget)
    needles = [f"budget{budget}.yaml", "field 'budget'", "greater than 0"]
    inject(
        fault_ledger,
        existing,
        "bad-input:budget",
        f"budget: {budget} in the file",
        ["run", str(yml), "-q"],
        needles,
    )
    args = ["run", str(existing.yaml), "-q", "--budget", str(budget)]
    needles = [existing.yaml.name, "field 'budget'", "greater than 0"]
    inject(fault_ledger, existing, "bad-input:budget", f"aso run --budget {budget}", args, needles)
    args = ["resume", NAME, "--store", str(existing.store), "--budget", str(budget)]
    needles = ["field 'budget'", "greater than 0"]
    inject(fault_ledger, existing, "bad-input:budget", f"aso resume --budget {budget}", args, needles)


def test_budget_below_the_initial_design(existing, fault_ledger):
    yml = existing.variant("budget-small", budget=3, initial_size=3)
    needles = ["budget-small.yaml", "budget (3) must exceed initial_size + 1 (4"]
    inject(
        fault_ledger,
        existing,
        "bad-input:budget",
        "budget 3 < initial_size + 1",
        ["run", str(yml), "-q"],
        needles,
    )


@pytest.mark.parametrize(
    ("case", "text", "needles"),
    [
        ("empty", "", ["expected a mapping of campaign fields"]),
        (
            "invalid-yaml",
            "name: [unclosed\nbudget: 3\n",
            ["not valid YAML at line 2"],
        ),
        ("list", "- a\n- b\n", ["expected a mapping of campaign fields"]),
    ],
)
def test_unreadable_campaign_file(existing, fault_ledger, case, text, needles):
    p = existing.file(f"{case}.yaml", text)
    inject(
        fault_ledger,
        existing,
        "bad-input:config",
        f"campaign file {case}",
        ["run", str(p), "-q"],
        [p.name, *needles],
    )


def test_missing_campaign_file_and_misspelt_fields(existing, fault_ledger):
    args = ["run", str(existing.folder / "nope.yaml"), "-q"]
    inject(
        fault_ledger,
        existing,
        "bad-input:config",
        "campaign file missing",
        args,
        ["nope.yaml", "campaign file not found"],
    )
    yml = existing.variant("misspelt", budjet=10)
    needles = [
        "misspelt.yaml",
        "field 'budjet': unknown field",
        "expected one of ['name', 'start', 'targets', 'budget'",
    ]
    inject(fault_ledger, existing, "bad-input:config", "field budjet", ["run", str(yml), "-q"], needles)
    yml = existing.variant("misspelt-surrogate", surrogate={"n_model": 2})
    needles = ["field 'surrogate.n_model': unknown field", "'n_models'"]
    inject(
        fault_ledger,
        existing,
        "bad-input:config",
        "field surrogate.n_model",
        ["run", str(yml), "-q"],
        needles,
    )


def test_new_campaign_with_bad_target_leaves_store_as_it_was(existing, fault_ledger):
    """A second campaign in the same store whose target does not cover the grid: no document is written."""
    target = existing.target("short-new.gr", existing.target_rows[:300])
    yml = existing.variant("new-short", name="another", targets=[target])
    inject(
        fault_ledger,
        existing,
        "bad-input:target",
        "new campaign, target grid mismatch",
        ["run", str(yml), "-q"],
        ["short-new.gr", "grid needs"],
    )


# ---- store settings that are wrong before any server is contacted -------------------------------------
@pytest.mark.parametrize(
    ("case", "store", "needles"),
    [
        ("no-uri", {"kind": "mongodb"}, ["store.uri", "a MongoDB URI (mongodb://...) is required"]),
        (
            "bad-port",
            {"kind": "mongodb", "uri": "mongodb://aso:s3cret-pw@127.0.0.1:99999/aso"},
            [
                "store.uri (mongodb://aso:***@127.0.0.1:99999/aso)",
                "not a valid MongoDB URI",
                "expected mongodb://",
            ],
        ),
        (
            "unknown-option",
            {"kind": "mongodb", "uri": "mongodb://aso:s3cret-pw@127.0.0.1:27017/aso?tsl=true"},
            ["not a valid MongoDB URI (Unknown option: tsl", "expected mongodb://"],
        ),
        (
            "password-file-missing",
            {"kind": "mongodb", "uri": "mongodb://aso@127.0.0.1:9/aso", "password_file": "no-such-file"},
            ["store.password_file", "no-such-file", "cannot read the password file"],
        ),
        ("kind", {"kind": "postgres"}, ["field 'store.kind'", "'embedded', 'mongodb' or 'mongomock'"]),
    ],
)
def test_bad_store_settings(existing, fault_ledger, case, store, needles):
    yml = existing.variant(f"store-{case}", store=store)
    line = inject(
        fault_ledger, existing, "bad-input:store", f"store {case}", ["run", str(yml), "-q"], needles
    )
    assert "s3cret-pw" not in line


@pytest.mark.parametrize("field", ["output", "store.path"])
def test_output_or_store_folder_is_a_file(existing, fault_ledger, field):
    """A folder setting that names an existing file: refused before anything is created."""
    a_file = existing.file(f"not-a-folder-{field}", "x")
    fields = {"output": str(a_file / "out")} if field == "output" else {"store": {"path": str(a_file)}}
    yml = existing.variant(f"folder-{field}", **fields)
    needles = [f"folder-{field}.yaml", f"field '{field}'", "is a file; expected a folder"]
    inject(fault_ledger, existing, "bad-input:config", f"{field} is a file", ["run", str(yml), "-q"], needles)


# ---- launchpad files -----------------------------------------------------------------------------------
LAUNCHPAD_CASES = {
    "missing": (None, ["missing.yaml", "launchpad file not found", "expected my_launchpad.yaml"]),
    "directory": ("DIR", ["directory.yaml", "is a directory", "expected a launchpad file"]),
    "empty": ("", ["empty.yaml", "not a launchpad file", "expected a mapping with 'host'"]),
    "invalid-yaml": (
        "host: [unclosed\nport: 1\n",
        ["invalid-yaml.yaml", "not a readable YAML/JSON launchpad file (invalid YAML at line 2)"],
    ),
    "binary": (b"\x00\xff\xfe\xfa", ["binary.yaml", "cannot be read (not UTF-8 text)"]),
    "no-host": ("name: fireworks\n", ["no-host.yaml", "expected a mapping with 'host'"]),
    "port-type": ("host: 127.0.0.1\nport: abc\n", ["field 'port': expected an integer", "got 'abc'"]),
    "password-number": (
        "host: 127.0.0.1\nport: 27017\nusername: aso\npassword: 918273645\n",
        ["field 'password': expected a string (quote it in YAML)"],
    ),
    "misspelt-field": (
        "host: 127.0.0.1\nport: 27017\nauthSource: admin\npassword: s3cret-pw\n",
        ["unknown field(s) ['authSource']", "'authsource'"],
    ),
    "kwargs-type": (
        "host: 127.0.0.1\nmongoclient_kwargs: tls\n",
        ["field 'mongoclient_kwargs': expected a mapping"],
    ),
    "keyfile": (
        "host: 127.0.0.1\nssl: true\nssl_keyfile: /k.pem\n",
        ["field 'ssl_keyfile'", "expected mongoclient_kwargs.tlsCertificateKeyFile"],
    ),
}


@pytest.mark.parametrize("case", sorted(LAUNCHPAD_CASES))
def test_unreadable_launchpad_file(existing, fault_ledger, case):
    """``aso submit --launchpad FILE`` with a file that is not a usable launchpad: one line, no connection."""
    content, needles = LAUNCHPAD_CASES[case]
    path = existing.folder / f"{case}.yaml"
    if content == "DIR":
        path.mkdir(exist_ok=True)
    elif content is not None:
        existing.file(path.name, content)
    args = [
        "submit",
        str(existing.yaml),
        "--launchpad",
        str(path),
        "--qadapter-cpu",
        str(LAUNCHPAD_DIR / "my_qadapter_cpu.yaml"),
        "--qadapter-gpu",
        str(LAUNCHPAD_DIR / "my_qadapter_gpu.yaml"),
    ]
    line = inject(
        fault_ledger, existing, "bad-input:launchpad", f"aso submit, launchpad {case}", args, needles
    )
    assert "s3cret-pw" not in line and "918273645" not in line


def test_launchpad_api_errors_are_input_errors(tmp_path):
    """The Python API raises the same one-line :class:`InputError` (no connection attempted)."""
    from aso_workflows.cluster.launchpad import load_launchpad

    bad = tmp_path / "lp.yaml"
    bad.write_text("host: 127.0.0.1\nport: 27017\nuser: aso\n")
    with pytest.raises(InputError, match=r"lp.yaml: unknown field\(s\) \['user'\]"):
        load_launchpad(bad)
    with pytest.raises(InputError, match="not a valid MongoDB URI"):
        load_launchpad("mongodb://aso:pw@127.0.0.1:99999/fireworks")


def test_launchpad_legacy_tls_fields_are_not_dropped(tmp_path):
    """``ssl``/``ssl_ca_certs`` at the top level (older FireWorks files): kept as pymongo TLS options.

    FireWorks 2 itself ignores them there, which would connect WITHOUT TLS.
    """
    from aso_workflows.cluster.launchpad import load_launchpad

    ca = tmp_path / "ca.pem"
    shutil.copy(_any_pem(), ca)
    p = tmp_path / "legacy.yaml"
    p.write_text(f"host: 127.0.0.1\nport: 27017\nname: fw\nssl: true\nssl_ca_certs: {ca}\n")
    lp = load_launchpad(p, check=False)
    assert lp.mongoclient_kwargs["tls"] is True and lp.mongoclient_kwargs["tlsCAFile"] == str(ca)
    assert lp.connection.options.pool_options._ssl_context is not None  # TLS really configured


def _any_pem() -> Path:
    import certifi

    return Path(certifi.where())
