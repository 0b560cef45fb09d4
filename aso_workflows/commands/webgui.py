"""``aso webgui``: FireWorks' web GUI on our LaunchPad, bound to 127.0.0.1, with basic auth when configured."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer

from aso_workflows.commands.common import guard
from aso_workflows.webgui.server import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from fireworks import LaunchPad


def webgui(
    launchpad: Annotated[
        str,
        typer.Option("--launchpad", "-l", help="my_launchpad.yaml or a mongodb:// URI."),
    ] = "my_launchpad.yaml",
    host: Annotated[
        str,
        typer.Option(help="Interface to bind; 0.0.0.0 makes it reachable from other machines."),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="TCP port.")] = DEFAULT_PORT,
    server: Annotated[
        str, typer.Option(help="gunicorn (worker processes) or werkzeug (one process).")
    ] = "gunicorn",
    workers: Annotated[int, typer.Option(help="gunicorn worker processes.")] = 1,
) -> None:
    """Serve the FireWorks web GUI for the campaigns in a LaunchPad (as ``lpad webgui``).

    Workflows are listed with readable names (campaign / it N / cand M / technique); each Firework page
    shows its campaign, iteration, candidate, technique and, for evaluations, the mismatch. Bound to
    127.0.0.1 unless --host says otherwise (reach it through an SSH tunnel: ssh -L 5000:127.0.0.1:5000).
    Basic auth when FWAPP_AUTH_USERNAME and FWAPP_AUTH_PASSWORD are set (the password is never printed).
    """
    with guard():
        from aso_workflows.cluster.launchpad import describe_launchpad, load_launchpad
        from aso_workflows.webgui.server import BasicAuth, WebGuiSettings, serve

        settings = WebGuiSettings(
            host=host,
            port=port,
            server=cast(Literal["gunicorn", "werkzeug"], server),  # WebGuiSettings refuses other names
            workers=workers,
            auth=BasicAuth.from_env(),
        )
        lp = load_launchpad(launchpad)  # fails here, with one line, if the server cannot be reached
        typer.echo(f"LaunchPad: {describe_launchpad(lp)}")
        opened = [lp]

        def factory() -> LaunchPad:
            # the first call reuses the checked LaunchPad; gunicorn workers open their own after the fork
            return opened.pop() if opened else load_launchpad(launchpad, check=False)

        serve(factory, settings, echo=typer.echo)
