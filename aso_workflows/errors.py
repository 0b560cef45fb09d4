"""Exceptions with one-line, user-facing messages."""

from __future__ import annotations


class AsoError(Exception):
    """Base class for errors reported to the user as a single line."""


class InputError(AsoError, ValueError):
    """Bad user input: a file or a field that is not what was expected.

    The message always names the file or field and what was expected, on one line.
    """

    def __init__(self, source: object, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class SimulationError(AsoError, RuntimeError):
    """A simulation (PDF engine or FEFF run) failed; the message says which and why."""
