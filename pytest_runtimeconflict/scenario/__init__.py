"""Scenario files: the manifest schema (``scenario.toml``) and its loading and validation."""

from __future__ import annotations

from pytest_runtimeconflict.scenario.manifest import (
    MANIFEST_NAME,
    RULE_IDS,
    Expectation,
    Scenario,
    ScenarioRun,
    load_scenario,
    load_scenarios,
)

__all__ = [
    "MANIFEST_NAME",
    "RULE_IDS",
    "Expectation",
    "Scenario",
    "ScenarioRun",
    "load_scenario",
    "load_scenarios",
]
