"""Fault scenarios print their figures at the end of the run, whatever pytest captures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_FIGURES: list[tuple[str, list[str]]] = []

Report = Callable[[str, list[str]], None]


@pytest.fixture
def report() -> Report:
    """`report(scenario, lines)`: figures for the end-of-run summary."""

    def add(scenario: str, lines: list[str]) -> None:
        _FIGURES.append((scenario, lines))

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("fault scenarios: figures")
    for scenario, lines in _FIGURES:
        terminalreporter.write_line(scenario)
        for line in lines:
            terminalreporter.write_line(f"  {line}")
