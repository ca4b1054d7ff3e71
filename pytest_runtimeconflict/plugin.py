"""The pytest face of the project: ``pytest --runtime-conflicts``.

Inert unless enabled. When enabled it (1) collects ``scenario.toml`` / ``*.scenario.toml`` files
as items with an expected outcome and (2) adds one item per planned import sequence
(``runtime-conflicts::numpy>scipy>torch``). Each item runs children through the sandbox; a
failure is diagnosed and reported with the libraries, the minimal order and what avoids it.
The pytest process itself never imports the modules under test.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_runtimeconflict.engine import session
from pytest_runtimeconflict.engine.verdicts import ItemVerdict
from pytest_runtimeconflict.errors import RuntimeConflictError
from pytest_runtimeconflict.files.locking import replace_atomically
from pytest_runtimeconflict.model.plan import Plan
from pytest_runtimeconflict.options import (
    OPTIONS,
    OptionDef,
    Settings,
    check_pyproject,
    read_settings,
)
from pytest_runtimeconflict.sandbox.fixture import RuntimeSandbox
from pytest_runtimeconflict.vocabulary import PLAN_NODE, JsonObject

if TYPE_CHECKING:
    from pytest_runtimeconflict.report.baseline import Baseline

STATE = pytest.StashKey["session.RCState"]()
WARNED = pytest.StashKey[set[str]]()
HANDLERS = pytest.StashKey[dict[int, Any]]()
PROPERTY = "runtime_conflicts"
SCOPE_KEY = "runtime_conflicts_scope"
RUN_ID_KEY = "runtime_conflicts_run_id"  # the workers' session id (their plan's context file)


class RuntimeConflictWarning(UserWarning):
    """A latent conflict: two copies or implementations of one runtime mapped at once."""


class ConflictFailure(Exception):
    """Raised by an item to fail with a preformatted report (shown without a traceback)."""


def _dest(option: OptionDef) -> str:
    return option.flag.lstrip("-").replace("-", "_")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "runtime-conflicts", "native runtime conflicts (pytest-runtimeconflict)"
    )
    for option in OPTIONS:
        if option.is_flag:
            group.addoption(
                option.flag, action="store_true", default=None, dest=_dest(option), help=option.help
            )
            parser.addini(option.ini, option.help, type="bool", default=False)
        elif option.multiple:
            group.addoption(
                option.flag,
                action="append",
                default=None,
                dest=_dest(option),
                metavar=option.metavar,
                help=option.help,
            )
            parser.addini(option.ini, option.help, type="linelist", default=[])
        else:
            group.addoption(
                option.flag,
                default=None,
                dest=_dest(option),
                metavar=option.metavar,
                help=option.help,
            )
            parser.addini(option.ini, option.help, default=option.default)


def _settings(config: pytest.Config) -> Settings:
    def get(option: OptionDef) -> tuple[Any, bool]:
        value = config.getoption(_dest(option))
        if value is not None:
            return value, True
        return config.getini(option.ini), False

    try:
        return read_settings(get)
    except RuntimeConflictError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    settings = _settings(config)
    if not settings.enabled:
        return
    if not sys.platform.startswith("linux"):
        warnings.warn(
            f"pytest-runtimeconflict needs Linux (ELF objects, /proc); on {sys.platform} "
            "--runtime-conflicts does nothing",
            RuntimeConflictWarning,
            stacklevel=1,
        )
        return
    config.addinivalue_line("markers", "runtime_conflicts: items added by pytest-runtimeconflict")
    try:
        check_pyproject(Path(config.rootpath))
    except RuntimeConflictError as exc:
        raise pytest.UsageError(str(exc)) from None
    state = session.RCState(
        settings=settings,
        rootdir=Path(config.rootpath),
        cache_dir=_cache_dir(config),
        run_id=_run_id(config),
        baseline=_baseline(config, settings),
    )
    config.stash[STATE] = state
    _plan_nodes_as_they_are(config)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(Reporter(config, state), "runtimeconflict-reporter")
        from pytest_runtimeconflict.sandbox.runner import handle_termination

        config.stash[HANDLERS] = handle_termination()  # SIGTERM/SIGHUP as Ctrl-C


def _plan_nodes_as_they_are(config: pytest.Config) -> None:
    """Show plan node ids as they are (``runtime-conflicts::a>b``) when pytest runs from a
    folder below the rootdir: pytest shows node ids relative to the current folder as if they
    were files (``../runtime-conflicts::a>b``), and the plan's node is not a file."""
    relative = config.cwd_relative_nodeid

    def cwd_relative_nodeid(nodeid: Any) -> Any:
        return nodeid if str(nodeid).split("::", 1)[0] == PLAN_NODE else relative(nodeid)

    setattr(config, "cwd_relative_nodeid", cwd_relative_nodeid)  # noqa: B010


def pytest_unconfigure(config: pytest.Config) -> None:
    if STATE in config.stash:
        del config.stash[STATE]
    if HANDLERS in config.stash:
        from pytest_runtimeconflict.sandbox.runner import restore_handlers

        restore_handlers(config.stash[HANDLERS])
        del config.stash[HANDLERS]
    reporter = config.pluginmanager.get_plugin("runtimeconflict-reporter")
    if reporter is not None:
        config.pluginmanager.unregister(reporter)


def _baseline(config: pytest.Config, settings: Settings) -> Baseline | None:
    """The --rc-baseline file, read once per process (a usage error when it is bad)."""
    from pytest_runtimeconflict.report.baseline import load_baseline

    if not settings.baseline:
        return None
    path = Path(os.path.normpath(Path(config.invocation_params.dir) / settings.baseline))
    try:
        return load_baseline(str(path), create=settings.update_baseline)
    except RuntimeConflictError as exc:
        raise pytest.UsageError(str(exc)) from None


def _cache_dir(config: pytest.Config) -> Path:
    """pytest's cache folder, or the user's cache when the project folder is read-only."""
    import tempfile

    try:
        if getattr(config, "cache", None) is not None:
            path = Path(config.cache.mkdir("runtimeconflict"))
        else:
            path = Path(config.rootpath) / ".pytest_cache" / "d" / "runtimeconflict"
            path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return path
    except OSError:
        from pytest_runtimeconflict.static.factcache import default_cache_dir

        uid = os.geteuid()
        base = default_cache_dir() or Path(tempfile.gettempdir()) / f"pytest-runtimeconflict-{uid}"
        return base / "projects"


def _run_id(config: pytest.Config) -> str:
    """Identical on the controller and every xdist worker of one session."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["testrunuid"])
    return str(config.getoption("testrunuid", None) or uuid.uuid4().hex)


def _internal_error(config: pytest.Config, exc: Exception, doing: str) -> None:
    """End the session with one line naming what failed (the traceback only with -v)."""
    if config.get_verbosity() > 0:
        raise exc
    pytest.exit(
        f"pytest-runtimeconflict: internal error while {doing}: {type(exc).__name__}: {exc}; "
        "run again with -v for the traceback, and please report it",
        returncode=pytest.ExitCode.INTERNAL_ERROR,
    )


def _state(config: pytest.Config) -> session.RCState | None:
    return config.stash.get(STATE, None)


# ---------------------------------------------------------------- collection


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _state(parent.config) is None:
        return None
    name = file_path.name
    if name == "scenario.toml" or name.endswith(".scenario.toml"):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = _state(config)
    if state is None:
        return
    _costliest_scenarios_first(items)
    try:
        plan = state.plan()
    except RuntimeConflictError as exc:
        raise pytest.UsageError(str(exc)) from None
    except Exception as exc:  # the catch-all of planning: one line, not INTERNALERROR
        _internal_error(config, exc, "planning (scanning the environment)")
    if plan.items:
        collector = PlanCollector.from_parent(session, name=PLAN_NODE, nodeid=PLAN_NODE)
        collector.plan = plan
        planned = collector.collect()
        # Report the synthetic collector like a collected file, so the terminal counts its items.
        report = pytest.CollectReport(PLAN_NODE, "passed", None, result=list(planned))
        config.hook.pytest_collectreport(report=report)
        items.extend(planned)
    _select_shard(config, state, items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Plan items of this job's share that -k or -m deselected cannot own a conflict."""
    state = _state(session.config)
    if state is None or state.scope is None:
        return
    running = {i.nodeid for i in session.items if isinstance(i, PlanItem)}
    planned = (n for n in state.scope.selected if n.startswith(PLAN_NODE + "::"))
    state.not_run = frozenset(planned) - running


def _select_shard(config: pytest.Config, state: session.RCState, items: list[pytest.Item]) -> None:
    """Keep this job's share of the plan items (--rc-shard); record the plan's identity."""
    from pytest_runtimeconflict.planning import shards as shard

    ours = {i.nodeid: i.expected_cost() for i in items if isinstance(i, _RCItem)}
    plan = state.plan()
    state.scope = shard.select(ours, plan.modules, plan.strength, state.settings.shard)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # the xdist controller collects nothing: tell it
        workeroutput[SCOPE_KEY] = state.scope.to_json()
        workeroutput[RUN_ID_KEY] = state.run_id
    if state.settings.shard is None:
        return
    mine = set(state.scope.selected)
    others = [i for i in items if isinstance(i, _RCItem) and i.nodeid not in mine]
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = [i for i in items if not isinstance(i, _RCItem) or i.nodeid in mine]


# Expected hangs wait out their timeout (and their diagnosis does again), crashes and failures
# are diagnosed: started first, they do not leave one xdist worker with the long tail.
_EXPECTED_COST = {"hung": 0, "crashed": 1, "failed": 1, "latent": 2, "passed": 3}


def _costliest_scenarios_first(items: list[pytest.Item]) -> None:
    """Reorder scenario items among their own positions (deterministic: same on every worker)."""
    slots = [i for i, item in enumerate(items) if isinstance(item, ScenarioItem)]
    ordered = sorted(
        (items[i] for i in slots),
        key=lambda item: _EXPECTED_COST.get(item.run.expect.outcome, 3),  # type: ignore[attr-defined]
    )
    for slot, item in zip(slots, ordered):
        items[slot] = item


class ScenarioFile(pytest.File):
    """A scenario manifest: one item per ``[[run]]``."""

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_runtimeconflict.scenario import load_scenario

        scenario = load_scenario(self.path)
        for run in scenario.runs:
            yield ScenarioItem.from_parent(self, name=run.id, scenario=scenario, run=run)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, RuntimeConflictError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))


class _RCItem(pytest.Item):
    """Shared reporting of items that run children."""

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, (ConflictFailure, RuntimeConflictError)):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def expected_cost(self) -> int:
        """Expected child time of the item (what --rc-shard balances)."""
        raise NotImplementedError

    def record(self, entry: JsonObject) -> None:
        self.user_properties.append((PROPERTY, json.dumps(entry, default=str)))

    def apply(self, verdict: ItemVerdict) -> None:
        """Record the runs, then warn, xfail, fail or skip as the verdict says."""
        for entry in verdict.entries_json():
            self.record(entry)
        for message in verdict.warnings:
            self.warn_once(message)
        if verdict.xfail:
            pytest.xfail(verdict.xfail)
        if verdict.failure:
            raise ConflictFailure(verdict.failure)
        if verdict.skip:
            pytest.skip(verdict.skip)

    def warn_once(self, message: str) -> None:
        """Warn ``message`` once per process, attributed to this item's file and line, not to
        the plugin: the same latent runtime set seen by many sequences is one warning (xdist
        workers warn the same text at the same place, which pytest's summary groups)."""
        warned = self.config.stash.setdefault(WARNED, set())
        if message in warned:
            return
        warned.add(message)
        filename, lineno = self.warning_location()
        warnings.warn_explicit(message, RuntimeConflictWarning, filename, lineno)

    def warning_location(self) -> tuple[str, int]:
        return PLAN_NODE, 0

    @property
    def state(self) -> session.RCState:
        state = _state(self.config)
        assert state is not None
        return state


class ScenarioItem(_RCItem):
    """One ``[[run]]`` of a scenario file, checked against its ``expect`` table."""

    def __init__(self, *, scenario: Any, run: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.run = run

    def runtest(self) -> None:
        self.apply(self.state.run_scenario_item(self.scenario, self.run))

    def expected_cost(self) -> int:
        from pytest_runtimeconflict.planning.shards import scenario_cost

        spec, expect = self.run.spec, self.run.expect
        return scenario_cost(
            len(spec.steps), expect.outcome, spec.timeout, self.state.settings.max_runs
        )

    def warning_location(self) -> tuple[str, int]:
        from pytest_runtimeconflict.scenario.manifest import run_line

        return str(self.path), run_line(self.path, self.scenario.runs.index(self.run))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        steps = " ; ".join(self.run.spec.steps)
        return self.path, None, f"scenario {self.scenario.name}::{self.name}: {steps}"


class PlanCollector(pytest.Collector):
    """The planned items: covering sequences, load-mode variants, targets, fork probes."""

    plan: Plan

    def collect(self) -> list[pytest.Item]:
        return [
            PlanItem.from_parent(self, name=item.name, index=index, planned=item)
            for index, item in enumerate(self.plan.items)
        ]


class PlanItem(_RCItem):
    """One planned item: runs it (repairing around crashes in a covering sequence) and
    reports each conflict."""

    def __init__(self, *, index: int, planned: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.planned = planned
        self.add_marker("runtime_conflicts")

    def runtest(self) -> None:
        self.apply(self.state.run_plan_item(self.index, self.planned))

    def expected_cost(self) -> int:
        from pytest_runtimeconflict.planning.shards import planned_cost, target_cost

        lengths = [len(run.order) for run in self.planned.runs]
        if self.planned.kind == "sequence":
            return sum(planned_cost(n) for n in lengths)
        return target_cost(lengths)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return PLAN_NODE, None, f"{PLAN_NODE}::{self.name}"


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    """What the plan holds beyond the node ids: modules, variants, targets, workloads."""
    state = _state(config)
    if state is None or state._plan is None:
        return []
    from pytest_runtimeconflict.planning.from_scan import describe_plan

    return describe_plan(state._plan)


# ---------------------------------------------------------------- reporting


def _skip_reason(report: pytest.TestReport) -> str:
    """Why pytest skipped an item (the text after ``Skipped: ``)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(reason).removeprefix("Skipped: ")


class Reporter:
    """Controller-side collection of results: terminal summary and the JSON report.

    Under xdist, workers attach their results to the reports' ``user_properties``; only the
    controller (the process without ``workerinput``) aggregates and writes, once.
    """

    def __init__(self, config: pytest.Config, state: session.RCState) -> None:
        self.config = config
        self.state = state
        self.reproducers: list[Any] = []  # report.repro_verify.Written
        self.repro_error = ""
        self.html_error = ""
        self.signal_exit: int | None = None

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """SIGTERM/SIGHUP end the session like Ctrl-C; the exit status says which (143/129)."""
        self.signal_exit = getattr(excinfo.value, "exit_code", None)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # user_properties ride on every phase's report; the call phase carries the results.
        self._record_outcome(report)
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.state.record(report.nodeid, json.loads(str(value)))

    def _record_outcome(self, report: pytest.TestReport) -> None:
        """pytest's outcome of each plan and scenario item, for the report (``merge`` judges
        by it)."""
        from pytest_runtimeconflict.planning.shards import is_plan_node
        from pytest_runtimeconflict.report.ci import item_outcome

        if is_plan_node(report.nodeid):
            previous = self.state.item_outcomes.get(report.nodeid)
            xfail = hasattr(report, "wasxfail")
            outcome = item_outcome(previous, report.when, report.outcome, xfail)
            if outcome is not None:
                self.state.item_outcomes[report.nodeid] = outcome
            if report.skipped and not xfail:
                self.state.skip_reasons[report.nodeid] = _skip_reason(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist: the plan's identity and shard, as the workers collected them."""
        from pytest_runtimeconflict.planning.shards import ShardScope

        output = getattr(node, "workeroutput", {})
        scope = output.get(SCOPE_KEY)
        if scope and self.state.scope is None:
            self.state.scope = ShardScope.from_json(scope)
        if output.get(RUN_ID_KEY):  # the plan's context the workers wrote (not-importable
            self.state.run_id = str(output[RUN_ID_KEY])  # modules, load modes ruled out)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_runtimeconflict.report import annotate

        for line in self.state.summary_lines():
            terminalreporter.write_line(line)
        if annotate.enabled(self.state.settings.annotations, os.environ):
            lines = annotate.github_lines(self.state.collected, self.state.settings.fail_on)
            for line in lines:
                terminalreporter.write_line(line)
        if self.reproducers:
            terminalreporter.write_line("reproducers (one per distinct conflict), run with:")
            for written in self.reproducers:
                check = written.verification.describe()
                terminalreporter.write_line(
                    f"  {self.state.settings.python} {written.path}  # verified: {check}"
                )
        if self.repro_error:
            terminalreporter.write_line(f"reproducers not written: {self.repro_error}", red=True)
        if self.html_error:
            terminalreporter.write_line(f"HTML report not written: {self.html_error}", red=True)

    def _path(self, value: str) -> Path:
        """An option's path, relative to the directory pytest was invoked from."""
        return Path(os.path.normpath(Path(self.config.invocation_params.dir) / value))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        scope = self.state.scope
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and scope and scope.empty_shard:
            session.exitstatus = pytest.ExitCode.OK  # its share of a small plan: nothing
        if self.signal_exit is not None:
            session.exitstatus = self.signal_exit
        self.state.baseline_note = self.state.write_baseline()
        if self.state.settings.repro_dir:
            from pytest_runtimeconflict.report.repro_verify import write_verified_reproducers

            entries = [entry for _, entry in self.state.collected]
            directory = self._path(self.state.settings.repro_dir)
            try:
                self.reproducers = write_verified_reproducers(
                    directory, entries, "--rc-repro-dir", self.state.settings.python
                )
            except RuntimeConflictError as exc:
                self.repro_error = str(exc)
        settings = self.state.settings
        if not (settings.report or settings.html):
            return
        data = self.state.report_json()
        if settings.report:
            path = self._path(settings.report)
            report = json.dumps(data, indent=2, default=str)
            try:
                replace_atomically(path, report.encode())
            except OSError as exc:
                sys.stderr.write(
                    f"pytest-runtimeconflict: error: cannot write --rc-report {str(path)!r}: "
                    f"{exc.strerror or exc}; give a writable path\n"
                )
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if settings.html:
            from pytest_runtimeconflict.report.html import write_html

            try:
                write_html(self._path(settings.html), data, "--rc-html")
            except RuntimeConflictError as exc:
                self.html_error = str(exc)


# ---------------------------------------------------------------- fixture


@pytest.fixture
def runtime_sandbox(request: pytest.FixtureRequest) -> RuntimeSandbox:
    """A sandbox running steps in fresh child interpreters (works without --runtime-conflicts)."""
    state = _state(request.config)
    if state is not None:
        s = state.settings
        return RuntimeSandbox(python=s.python, timeout=s.timeout, exercise=s.exercise)
    return RuntimeSandbox(python=sys.executable, timeout=120.0)
