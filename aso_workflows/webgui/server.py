"""The FireWorks web GUI (``lpad webgui``) for our workflows: serve it, bound to 127.0.0.1, with basic auth.

FireWorks' Flask app (:mod:`fireworks.flask_site.app`) already lists workflows and shows every Firework;
our Fireworks carry readable names (``campaign / it 1 / cand 0 / pdf``), their key numbers in the spec
(``_aso``: campaign, iteration, candidate, technique, kind; set by :mod:`aso_workflows.campaign.jobs`) and
the mismatch of an evaluation in their launch's ``stored_data``. :func:`configure_app` adds two things
to FireWorks' pages without copying them (templates that extend FireWorks' own):

- a "Campaign" table on each Firework page with those numbers, rendered on the server, so it shows
  without JavaScript, and the mismatch beside each evaluation in the workflow list;
- a local jQuery (Debian's ``libjs-jquery``, when installed) ahead of the ``code.jquery.com`` one the
  pages load, so the JSON view and the workflow graph also work on a cluster without internet access.

Basic auth: FireWorks 2.x takes the credentials only as ``lpad webgui --webgui_username/--webgui_password``
arguments, which every user of the machine can read in ``ps``. We read them from the environment
(:data:`USERNAME_ENV`, :data:`PASSWORD_ENV`) and hand them to FireWorks' own check
(``app.config["WEBGUI_USERNAME"/"WEBGUI_PASSWORD"]``); the password is never printed.

Serving: gunicorn (as ``lpad webgui --server_mode``; each worker opens its own LaunchPad connection after
the fork) or werkzeug's threaded server (one process; also what :func:`serve_in_thread` uses for tests).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from aso_workflows.errors import InputError

if TYPE_CHECKING:
    from fireworks import LaunchPad
    from flask import Flask
    from markupsafe import Markup

__all__ = [
    "USERNAME_ENV",
    "PASSWORD_ENV",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "BasicAuth",
    "WebGuiSettings",
    "key_numbers",
    "configure_app",
    "serve",
    "serve_in_thread",
]

logger = logging.getLogger(__name__)

USERNAME_ENV = "FWAPP_AUTH_USERNAME"
"""Basic-auth user name of the web GUI (with :data:`PASSWORD_ENV`; FireWorks' ``FWAPP_`` prefix)."""
PASSWORD_ENV = "FWAPP_AUTH_PASSWORD"
"""Basic-auth password of the web GUI."""
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000  # FireWorks' WEBSERVER_PORT

# Where a local jQuery may be found (the FireWorks pages load theirs from code.jquery.com).
JQUERY_PATHS = (
    Path("/usr/share/javascript/jquery/jquery.min.js"),  # Debian/Ubuntu libjs-jquery
    Path("/usr/share/javascript/jquery/jquery.js"),
)
_JQUERY_ROUTE = "/aso-static/jquery.min.js"

# Templates that extend FireWorks' own (reachable as "fireworks/<name>"): only additions, no copies.
_HEAD = """{% block morehead %}{% if aso_jquery %}<script type="text/javascript" src="{{ aso_jquery }}">\
</script>{% endif %}{{ super() }}{% endblock %}"""
_TEMPLATES = {
    "fw_details.html": """{% extends "fireworks/fw_details.html" %}"""
    + _HEAD
    + """{% block content %}{% set rows = aso_key_numbers(fw) %}{% if rows %}
<table class="table table-bordered table-condensed" id="aso-key-numbers" style="width: auto;">
  <tr><th colspan="2">Campaign</th></tr>
  {% for label, value in rows %}<tr><th>{{ label }}</th><td class="aso-{{ label }}">{{ value }}</td></tr>
  {% endfor %}
</table>
<p id="aso-campaign-link"><a href="{{ aso_campaign_url(fw.spec._aso.campaign) }}">Campaign page</a></p>{% endif %}
{{ super() }}{% endblock %}""",
    "wf_details.html": """{% extends "fireworks/wf_details.html" %}"""
    + _HEAD
    + """{% block content %}{% set name = (wf.metadata or {}).get("campaign") %}{% if name %}
<p id="aso-campaign-link" class="text-center"><a href="{{ aso_campaign_url(name) }}">Campaign page: {{ name }}</a>
(best mismatch vs simulations, spectra, failures, pending candidates)</p>{% endif %}
{{ super() }}{% endblock %}""",
    "home.html": """{% extends "fireworks/home.html" %}\
{% block content %}{{ super() | aso_mismatches }}{% endblock %}""",
}
# A Firework link of FireWorks' workflow list (home.html); the mismatch goes after it.
_FW_LINK = re.compile(r'(<a class="fw-link [^"]*" href="/fw/(\d+)"[^>]*>[^<]*</a>)')


@dataclass(frozen=True)
class BasicAuth:
    """Credentials the web GUI asks for (HTTP basic auth)."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BasicAuth | None:
        """Credentials from :data:`USERNAME_ENV` and :data:`PASSWORD_ENV`; None when neither is set.

        Raises
        ------
        InputError
            Only one of the two is set (or one is empty).
        """
        env = os.environ if environ is None else environ
        user, password = env.get(USERNAME_ENV), env.get(PASSWORD_ENV)
        if user is None and password is None:
            return None
        if not user or not password:
            missing = PASSWORD_ENV if user else USERNAME_ENV
            raise InputError(
                missing, f"set both {USERNAME_ENV} and {PASSWORD_ENV} (non-empty) for basic auth"
            )
        return cls(user, password)


@dataclass
class WebGuiSettings:
    """How the web GUI is served.

    Attributes
    ----------
    host
        Interface to bind: ``127.0.0.1`` (this machine only; reach it through an SSH tunnel) unless told
        otherwise.
    port
        TCP port (0: any free port).
    server
        ``gunicorn`` (several worker processes) or ``werkzeug`` (one process, threads).
    workers
        gunicorn worker processes.
    auth
        Basic-auth credentials (None: open to whoever reaches the port).
    fw_query, wf_query
        Extra MongoDB filters on the Fireworks / workflows shown (as ``lpad webgui --fwquery/--wflowquery``).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    server: Literal["gunicorn", "werkzeug"] = "gunicorn"
    workers: int = 1
    auth: BasicAuth | None = None
    fw_query: dict | None = None
    wf_query: dict | None = None

    def __post_init__(self) -> None:
        if self.server not in ("gunicorn", "werkzeug"):
            raise InputError("--server", f"expected gunicorn or werkzeug, got {self.server!r}")
        if not 0 <= int(self.port) <= 65535:
            raise InputError("--port", f"expected a TCP port 0-65535, got {self.port}")
        if int(self.workers) < 1:
            raise InputError("--workers", f"expected at least 1, got {self.workers}")

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def describe(self, port: int | None = None) -> str:
        """One line for the log: address and whether a login is needed (never the password)."""
        url = f"http://{self.host}:{port if port is not None else self.port}/"
        who = f"basic auth as user {self.auth.username!r}" if self.auth else "no login"
        return f"FireWorks web GUI on {url} ({who})"


# ---- what the pages show ------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def key_numbers(fw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The key numbers of one Firework document, as ``(label, text)`` rows; empty for non-campaign Fireworks.

    From the spec's ``_aso`` (campaign, iteration, candidate, technique, kind, site) and the
    ``stored_data`` of the newest launch (mismatch, per-technique MSE, status).
    """
    tag = (fw.get("spec") or {}).get("_aso") or {}
    if not tag:
        return []
    rows = [
        (label, _fmt(tag[label]))
        for label in ("campaign", "iteration", "candidate", "technique", "site", "kind")
        if tag.get(label) is not None
    ]
    launches = list(fw.get("launches") or [])
    stored = ((launches[-1].get("action") or {}).get("stored_data") or {}) if launches else {}
    if "mismatch" in stored:
        rows.append(("mismatch", "—" if stored["mismatch"] is None else _fmt(stored["mismatch"])))
        for technique, mse in sorted((stored.get("mse") or {}).items()):
            rows.append((f"mse {technique}", _fmt(mse)))
        for technique, text in sorted((stored.get("goodness") or {}).items()):
            rows.append((f"fit {technique}", str(text)))  # "Rw 0.3218" (PDF) / "R 0.012" (XAS)
        if stored.get("status"):
            rows.append(("status", str(stored["status"])))
    return rows


def _mismatches(page: str) -> Markup:
    """Jinja filter: FireWorks' workflow list with the mismatch after each evaluation Firework's link."""
    from flask import current_app
    from markupsafe import Markup, escape

    ids = sorted({int(i) for _, i in _FW_LINK.findall(str(page))})
    found: dict[int, tuple[float, dict]] = {}
    if ids:
        query = {"fw_id": {"$in": ids}, "action.stored_data.mismatch": {"$ne": None}}
        projection = {
            "fw_id": 1,
            "launch_id": 1,
            "action.stored_data.mismatch": 1,
            "action.stored_data.goodness": 1,
        }
        lp = current_app.lp  # type: ignore[attr-defined]  # FireWorks keeps its LaunchPad on the app
        for d in lp.launches.find(query, projection).sort("launch_id", 1):
            stored = d["action"]["stored_data"]  # the newest launch wins
            found[d["fw_id"]] = (stored["mismatch"], stored.get("goodness") or {})

    def add(m: re.Match) -> str:
        value, goodness = found.get(int(m.group(2)), (None, {}))
        if value is None:
            return m.group(1)
        fit = "".join(f", {escape(str(text))}" for _, text in sorted(goodness.items()))  # Rw / R
        return f'{m.group(1)} <small class="aso-mismatch">mismatch {escape(_fmt(value))}{fit}</small>'

    return Markup(_FW_LINK.sub(add, str(page)))


def _jquery_file() -> Path | None:
    return next((p for p in JQUERY_PATHS if p.is_file()), None)


def configure_app(launchpad: LaunchPad, settings: WebGuiSettings | None = None) -> Flask:
    """FireWorks' Flask app, showing ``launchpad`` with our additions; returns the app.

    The app is FireWorks' module-level singleton (as ``lpad webgui`` uses it): one LaunchPad per process.
    """
    from fireworks.flask_site.app import app
    from flask import send_file
    from jinja2 import ChoiceLoader, DictLoader, PrefixLoader

    settings = settings or WebGuiSettings()
    app.lp = launchpad
    app.config["WEBGUI_USERNAME"] = settings.auth.username if settings.auth else None
    app.config["WEBGUI_PASSWORD"] = settings.auth.password if settings.auth else None
    app.BASE_Q = dict(settings.fw_query or {})
    app.BASE_Q_WF = dict(settings.wf_query or {})
    if "state" in app.BASE_Q:  # as lpad webgui does
        app.BASE_Q_WF["state"] = app.BASE_Q["state"]
    if not getattr(app, "_aso_configured", False):
        original = app.jinja_loader  # FireWorks' templates folder
        app.jinja_loader = ChoiceLoader(
            [DictLoader(_TEMPLATES), PrefixLoader({"fireworks": original}), original]
        )
        app.add_template_global(key_numbers, "aso_key_numbers")
        _add_campaign_page(app)
        app.add_template_filter(_mismatches, "aso_mismatches")
        jquery = _jquery_file()
        if jquery is not None:
            app.add_url_rule(
                _JQUERY_ROUTE, "aso_jquery", lambda: send_file(jquery, mimetype="text/javascript")
            )
        app.add_template_global(_JQUERY_ROUTE if jquery is not None else None, "aso_jquery")
        app._aso_configured = True
    return app


def _add_campaign_page(app: Flask) -> None:
    """The live campaign page (:mod:`aso_workflows.webgui.campaign_page`) at ``/aso/campaign/<name>``."""
    from fireworks.flask_site.app import requires_auth
    from flask import Response, current_app

    from aso_workflows.errors import AsoError
    from aso_workflows.webgui.campaign_page import campaign_page, campaign_url

    @requires_auth
    def page(name: str) -> str | Response:
        try:
            return campaign_page(current_app.lp, name)  # type: ignore[attr-defined]  # set by FireWorks
        except AsoError as exc:
            return Response(str(exc), status=404, mimetype="text/plain")

    app.add_url_rule("/aso/campaign/<path:name>", "aso_campaign", page)
    app.add_template_global(campaign_url, "aso_campaign_url")


# ---- serving ------------------------------------------------------------------------------------------
def _warn_if_open(settings: WebGuiSettings) -> None:
    if not settings.loopback and settings.auth is None:
        logger.warning(
            "web GUI bound to %s without a login: anyone who reaches this port sees the workflows; "
            "set %s and %s",
            settings.host,
            USERNAME_ENV,
            PASSWORD_ENV,
        )


def serve(
    launchpad_factory: Callable[[], Any],
    settings: WebGuiSettings | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the web GUI until interrupted (Ctrl-C / SIGTERM).

    Parameters
    ----------
    launchpad_factory
        Opens the LaunchPad (e.g. ``lambda: load_launchpad(path)``): called here, and again in each
        gunicorn worker after the fork (a MongoDB client must not cross a fork).
    settings
        Address, server and login.
    echo
        Where the one startup line goes.
    """
    settings = settings or WebGuiSettings()
    _warn_if_open(settings)
    app = configure_app(launchpad_factory(), settings)
    if settings.server == "werkzeug":
        from werkzeug.serving import make_server

        server = make_server(settings.host, settings.port, app, threaded=True)
        echo(settings.describe(server.server_port))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return
    from gunicorn.app.base import BaseApplication

    def post_fork(server: Any, worker: Any) -> None:
        configure_app(launchpad_factory(), settings)

    bind, workers = f"{settings.host}:{settings.port}", int(settings.workers)

    class _Gunicorn(BaseApplication):
        # FireWorks' fireworks.flask_site.gunicorn.StandaloneApplication, plus the post_fork hook
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("post_fork", post_fork)
            self.cfg.set("proc_name", "aso-webgui")

        # types-gunicorn's WSGI callable takes a start_response without exc_info; Flask's wants one with it
        def load(self) -> Flask:  # type: ignore[override]
            return app

    echo(settings.describe())
    _Gunicorn().run()


@contextlib.contextmanager
def serve_in_thread(launchpad: LaunchPad, settings: WebGuiSettings | None = None) -> Iterator[str]:
    """Serve the web GUI from a thread of this process (werkzeug); yields its base URL (tests, notebooks).

    ``settings.port`` 0 (the default here) picks a free port.
    """
    from werkzeug.serving import make_server

    settings = settings or WebGuiSettings(port=0, server="werkzeug")
    _warn_if_open(settings)
    app = configure_app(launchpad, settings)
    server = make_server(settings.host, settings.port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="aso-webgui", daemon=True)
    thread.start()
    try:
        host, port = cast("tuple[str, int]", server.server_address[:2])  # an AF_INET address
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
