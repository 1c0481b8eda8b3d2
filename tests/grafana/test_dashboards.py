"""The Grafana dashboards of deploy/grafana: every panel's SQL runs on the real call-history
schema, with data in it, on both backends, and returns the figures the data implies.

The ClickHouse plugin (grafana-clickhouse-datasource) rewrites a panel's SQL in two steps before
ClickHouse sees it, and :func:`expand` below does the same:

1. in the browser, ``$__conditionalAll(condition, $var)`` becomes ``1=1`` when the variable is
   set to All (or empty) and ``condition`` otherwise; then Grafana replaces the template
   variables (``$var``, ``${var}``, ``${var:format}``, ``[[var]]``), with the plugin's default
   format for multi-value variables (``'a','b'``);
2. in the plugin's backend, ``$__timeFilter(col)`` becomes
   ``col >= toDateTime(<from>) AND col <= toDateTime(<to>)`` (epoch seconds, both ends
   included), ``$__timeInterval(col)`` becomes
   ``toStartOfInterval(toDateTime(col), INTERVAL <n> second)``, ``$__interval_s`` the interval
   in seconds (at least 1), ``$__fromTime`` / ``$__toTime`` ``toDateTime(<epoch>)``.

A macro this expander does not know fails the test instead of reaching ClickHouse unexpanded.

Backends: the chDB half runs in a child process (``python -m tests.grafana.test_dashboards``),
because chDB binds one data path per process and tests/cdr holds its own for the session; the
server half starts a private clickhouse-server (Debian's 18.16) with scripts/clickhouse-server.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "clickhouse.yaml"
PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "switchboard.yaml"
SERVER_SCRIPT = ROOT / "scripts" / "clickhouse-server.sh"
PLUGIN = "grafana-clickhouse-datasource"
DATASOURCE_UID = "switchboard-clickhouse"
TENANT_FILTER = "$__conditionalAll(tenant_id IN (${tenant:singlequote}), $tenant)"


# The macro expander -----------------------------------------------------------------------------

#: The value of a template variable set to All.
ALL = "$__all"
#: Macros the plugin's frontend expands (before the template variables).
FRONTEND_MACROS = frozenset({"conditionalAll"})
#: Macros the plugin's backend expands (after the template variables).
BACKEND_MACROS = frozenset({"timeFilter", "timeInterval", "interval_s", "fromTime", "toTime"})
KNOWN_MACROS = FRONTEND_MACROS | BACKEND_MACROS

_MACRO_NAME = re.compile(r"\$__(\w+)")
# Grafana's template variable syntaxes: $var, [[var]] / [[var:format]], ${var} / ${var:format}.
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")


class MacroError(ValueError):
    """A panel's SQL uses a macro, a variable or a format the expander does not know, or
    calls a macro with the wrong arguments."""


@dataclass(frozen=True)
class Variable:
    """A template variable's current value: one value (single-select), a tuple of values
    (multi-select) or ALL; ``options`` are the values All stands for."""

    value: str | tuple[str, ...]
    options: tuple[str, ...] = ()

    @property
    def is_all(self) -> bool:
        return self.value == ALL or self.value == (ALL,)

    def values(self) -> list[str]:
        if self.is_all:
            return list(self.options)
        return [self.value] if isinstance(self.value, str) else list(self.value)


@dataclass(frozen=True)
class QueryContext:
    """What Grafana sends with a panel's query: the time range, the interval, the variables."""

    time_from: datetime
    time_to: datetime
    interval_s: float
    variables: Mapping[str, Variable] = field(default_factory=dict)


def macro_names(sql: str) -> set[str]:
    """Names of the ``$__name`` macros in ``sql``."""
    return set(_MACRO_NAME.findall(sql))


def _macro_args(sql: str, open_paren: int, name: str) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose ``(`` is at ``open_paren`` (nested
    parentheses kept together), untrimmed, and the index just after its ``)``."""
    depth, start, args = 0, open_paren + 1, []
    for index in range(open_paren, len(sql)):
        char = sql[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:index])
                return args, index + 1
        elif char == "," and depth == 1:
            args.append(sql[start:index])
            start = index + 1
    raise MacroError(f"$__{name}( has no closing parenthesis")


def expand_conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    """``$__conditionalAll(condition, $var)``: ``1=1`` when ``var`` is All or empty, else
    ``condition`` as written (its variables are replaced afterwards). Innermost/last first."""
    marker = "$__conditionalAll("
    index = sql.rfind(marker)
    while index != -1:
        args, end = _macro_args(sql, index + len(marker) - 1, "conditionalAll")
        if len(args) != 2:
            raise MacroError(f"$__conditionalAll takes 2 arguments, got {len(args)}: {sql[index:end]}")
        found = re.search(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)", args[1])
        if not found:
            raise MacroError(f"the second argument of $__conditionalAll must be a variable: {args[1]!r}")
        name = found.group(1) or found.group(2)
        if name not in variables:
            raise MacroError(f"$__conditionalAll refers to an unknown variable ${name}")
        variable = variables[name]
        phrase = "1=1" if variable.is_all or ",".join(variable.values()) == "" else args[0]
        sql = sql[:index] + phrase + sql[end:]
        index = sql.rfind(marker)
    return sql


def _format_variable(variable: Variable, fmt: str | None) -> str:
    values = variable.values()
    multi = variable.is_all or not isinstance(variable.value, str)
    if fmt is None:  # the plugin's own format: a list as 'a','b', a single value as is
        return "'" + "','".join(values) + "'" if multi else values[0]
    if fmt == "singlequote":
        return ",".join("'" + value.replace("'", "\\'") + "'" for value in values)
    if fmt == "sqlstring":
        return ",".join("'" + value.replace("'", "''") + "'" for value in values)
    if fmt in ("csv", "raw"):
        return ",".join(values)
    raise MacroError(f"unsupported variable format {fmt!r}")


def expand_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    """Grafana's template variable interpolation. ``$__...`` names are left to the macros."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        if name.startswith("__"):
            return match.group(0)
        if name not in variables:
            raise MacroError(f"unknown template variable ${name}")
        return _format_variable(variables[name], match.group(3) or match.group(5))

    return _VARIABLE.sub(replace, sql)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def expand_backend_macros(sql: str, context: QueryContext) -> str:
    """The plugin backend's macros (arguments trimmed, as the plugin does)."""
    interval = max(int(context.interval_s), 1)
    out: list[str] = []
    position = 0
    while (found := _MACRO_NAME.search(sql, position)) is not None:
        name = found.group(1)
        if name not in BACKEND_MACROS:
            raise MacroError(f"unknown macro $__{name}")
        end = found.end()
        args: list[str] = []
        if end < len(sql) and sql[end] == "(":
            raw_args, end = _macro_args(sql, end, name)
            args = [arg.strip() for arg in raw_args if arg.strip() or len(raw_args) > 1]
        wanted = 1 if name in ("timeFilter", "timeInterval") else 0
        if len(args) != wanted:
            raise MacroError(f"$__{name} takes {wanted} argument(s), got {args}")
        if name == "timeFilter":
            column = args[0]
            text = (
                f"{column} >= toDateTime({_epoch(context.time_from)})"
                f" AND {column} <= toDateTime({_epoch(context.time_to)})"
            )
        elif name == "timeInterval":
            text = f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {interval} second)"
        elif name == "interval_s":
            text = str(interval)
        elif name == "fromTime":
            text = f"toDateTime({_epoch(context.time_from)})"
        else:  # toTime
            text = f"toDateTime({_epoch(context.time_to)})"
        out.append(sql[position : found.start()])
        out.append(text)
        position = end
    out.append(sql[position:])
    return "".join(out)


def expand(sql: str, context: QueryContext) -> str:
    """A panel's SQL as the plugin sends it to ClickHouse."""
    sql = expand_conditional_all(sql, context.variables)
    sql = expand_variables(sql, context.variables)
    return expand_backend_macros(sql, context)


# Dashboards ---------------------------------------------------------------------------------------

DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_targets(path: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(load_dashboard(path)):
        for target in panel.get("targets", []):
            yield panel, target


def query_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "query"]


def variable_sql(variable: Mapping[str, Any]) -> str:
    query = variable["query"]
    return str(query["rawSql"] if isinstance(query, dict) else query)


# Data: two tenants, a day of calls -------------------------------------------------------------

DAY = datetime(2024, 3, 14, tzinfo=UTC)
TIME_FROM = DAY + timedelta(hours=8)
TIME_TO = DAY + timedelta(hours=14)
INTERVAL_S = 3600
TENANTS = ("acme", "globex")


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def leg(
    tenant: str,
    linkedid: str,
    n: int,
    caller: str,
    called: str,
    start: datetime,
    *,
    wait: int | None = None,
    talk: int = 0,
    ring: int = 20,
    **fields: Any,
) -> dict[str, Any]:
    """A call-record message as JSON: answered after ``wait`` seconds and talked ``talk``
    seconds, or (``wait`` None) rang ``ring`` seconds unanswered."""
    if wait is not None:
        answer: datetime | None = start + timedelta(seconds=wait)
        end = start + timedelta(seconds=wait + talk)
        disposition, duration, billsec = "answered", wait + talk, talk
    else:
        answer, end = None, start + timedelta(seconds=ring)
        disposition, duration, billsec = fields.pop("disposition", "no_answer"), ring, 0
    return {
        "tenant_id": tenant,
        "linkedid": linkedid,
        "leg_id": f"{linkedid}-{n}",
        "start": start.isoformat(),
        "answer": None if answer is None else answer.isoformat(),
        "end": end.isoformat(),
        "caller_number": caller,
        "called_number": called,
        "disposition": disposition,
        "duration": duration,
        "billsec": billsec,
        **fields,
    }


def batches() -> list[list[dict[str, Any]]]:
    """The records, in two inserts: the second redelivers two legs (duplicates that stay
    unmerged, since the tests stop merges on ``calls``)."""
    a, g = "acme", "globex"
    first = [
        # C1: from the city through the IVR into queue 800, Belkina (101) answers after 20 s,
        # consults Shevchenko (102), attended transfer; Shevchenko goes on with the caller.
        leg(a, "1710406800.1", 1, "+79255283744", "800", at(9), wait=20, talk=180,
            queue_number="800", ivr_number="700", ivr_digits="2", called_account="101",
            called_name="Belkina", transfer="attended", transferred_to="102",
            recording_id="acme/2024/03/14/1710406800.1.mp3"),
        leg(a, "1710406800.1", 2, "101", "102", at(9, 2), wait=5, talk=75,
            caller_account="101", called_account="102", caller_name="Belkina", called_name="Shevchenko"),
        leg(a, "1710406800.1", 3, "+79255283744", "102", at(9, 3, 20), wait=0, talk=300,
            called_account="102", called_name="Shevchenko"),
        # C2: queue 800, two agents ring (one busy), nobody answers: missed and abandoned.
        leg(a, "1710410400.2", 1, "+79161112233", "800", at(10), ring=30, queue_number="800",
            called_account="101"),
        leg(a, "1710410400.2", 2, "+79161112233", "800", at(10), ring=30, queue_number="800",
            called_account="102", disposition="busy"),
        # C3: queue 801, answered by 103 after 10 s.
        leg(a, "1710411000.3", 1, "+79031234567", "801", at(10, 10), wait=10, talk=120,
            queue_number="801", called_account="103"),
        # C4: queue 800 at the turn of the hour: 102 does not answer, 101 answers 40 s after
        # the caller entered the queue.
        leg(a, "1710413970.4", 1, "+79255283744", "800", at(10, 59, 30), ring=15, queue_number="800",
            called_account="102"),
        leg(a, "1710413970.4", 2, "+79255283744", "800", at(10, 59, 45), wait=25, talk=60,
            queue_number="800", called_account="101"),
        # C5: internal call 101 -> 102.
        leg(a, "1710415800.5", 1, "101", "102", at(11, 30), wait=3, talk=90,
            caller_account="101", called_account="102"),
        # C6: outgoing call of 103, not answered: missed.
        leg(a, "1710417600.6", 1, "103", "+74951234567", at(12), ring=30, caller_account="103"),
        # Outside the range [08:00:00, 14:00:00]: one second before and one after.
        leg(a, "1710403199.7", 1, "+79255283744", "800", at(7, 59, 59), wait=5, talk=50,
            queue_number="800", called_account="101"),
        leg(a, "1710424801.8", 1, "+79255283744", "102", at(14, 0, 1), wait=2, talk=40, called_account="102"),
        # The other tenant: same caller, same account and queue numbers.
        leg(g, "1710406900.1", 1, "+79255283744", "900", at(9, 1, 40), wait=5, talk=500, called_account="101"),
        leg(g, "1710408600.2", 1, "+79990000000", "900", at(9, 30), ring=20),
        leg(g, "1710412200.3", 1, "+79990000001", "800", at(10, 30), wait=100, talk=30,
            queue_number="800", called_account="201"),
    ]  # fmt: skip
    redelivered = [record for record in first if record["leg_id"] in ("1710406800.1-3", "1710406900.1-1")]
    return [first, redelivered]


#: Tenant variable settings the panels are run with.
CHOICES: dict[str, Variable] = {
    "acme": Variable("acme"),
    "globex": Variable(("globex",)),
    "all": Variable(ALL, options=TENANTS),
    "both": Variable(("acme", "globex")),
}
#: Checks of the data itself, run on both backends with the panels.
DUPLICATES_KEY = "check|duplicates"
DUPLICATES_SQL = (
    "SELECT count() AS legs, uniqExact(leg_id) AS distinct_legs FROM calls WHERE tenant_id = 'acme'"
)


def panel_key(path: Path, panel: Mapping[str, Any], target: Mapping[str, Any], choice: str) -> str:
    return f"{path.name}|{panel['title']}|{target.get('refId', 'A')}|{choice}"


def planned_queries() -> dict[str, str]:
    """Every panel target of every dashboard, expanded for each tenant choice; each query
    variable's SQL; the data checks."""
    queries = {DUPLICATES_KEY: DUPLICATES_SQL}
    for path in DASHBOARD_FILES:
        dashboard = load_dashboard(path)
        for variable in query_variables(dashboard):
            context = QueryContext(TIME_FROM, TIME_TO, INTERVAL_S, {})  # no variables in a variable
            queries[f"{path.name}|variable:{variable['name']}"] = expand(variable_sql(variable), context)
        for panel, target in panel_targets(path):
            for choice, value in CHOICES.items():
                context = QueryContext(TIME_FROM, TIME_TO, INTERVAL_S, {"tenant": value})
                queries[panel_key(path, panel, target, choice)] = expand(target["rawSql"], context)
    return queries


# Results: the same plain values from both backends -------------------------------------------


def _plain(kind: str, value: Any) -> Any:
    """A result value as plain Python: numbers as int/float, DateTime as epoch seconds."""
    if value is None:
        return None
    kind = kind.removeprefix("Nullable(").removesuffix(")") if kind.startswith("Nullable(") else kind
    if kind.startswith("DateTime"):
        if isinstance(value, str):  # chDB's JSON: the column's time zone, UTC here
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp())
    if kind.startswith(("Int", "UInt")):
        return int(value)
    if kind.startswith("Float"):
        return float(value)
    return value


def _rows(columns: Sequence[tuple[str, str]], raw_rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    return {
        "columns": [list(column) for column in columns],
        "rows": [
            {name: _plain(kind, v) for (name, kind), v in zip(columns, row, strict=True)} for row in raw_rows
        ],
    }


def _chdb_worker(request_file: str, result_file: str) -> None:
    """Child process: load the records into a fresh chDB store and run the queries."""
    from switchboard_cdr.store.chdb_backend import ChdbCallStore
    from switchboard_contracts.cdr import CallRecord

    request = json.loads(Path(request_file).read_text())
    store = ChdbCallStore(request["path"])
    try:
        store.migrate()
        store._command("SYSTEM STOP MERGES calls")
        for batch in request["batches"]:
            store.insert([CallRecord.model_validate(record) for record in batch])
        results: dict[str, Any] = {}
        for key, sql in request["queries"].items():
            try:
                document = json.loads(store._read(sql, "JSONCompact"))
            except Exception as exc:
                results[key] = {"error": str(exc)}
                continue
            columns = [(column["name"], column["type"]) for column in document["meta"]]
            results[key] = _rows(columns, document["data"])
        Path(result_file).write_text(json.dumps(results))
    finally:
        store.close()


@pytest.fixture(scope="module")
def planned() -> dict[str, str]:
    return planned_queries()


@pytest.fixture(scope="module")
def chdb_results(planned: dict[str, str]) -> Iterator[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="sb-grafana-chdb-"))
    try:
        request = {"path": str(workdir / "data"), "batches": batches(), "queries": planned}
        (workdir / "request.json").write_text(json.dumps(request))
        done = subprocess.run(
            [sys.executable, "-m", "tests.grafana.test_dashboards", str(workdir / "request.json"),
             str(workdir / "result.json")],
            cwd=ROOT,
            env={**os.environ, "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"chDB worker failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        yield json.loads((workdir / "result.json").read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def server_results(planned: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A private clickhouse-server (Debian's 18.16) on free ports, loaded and queried."""
    from clickhouse_driver import Client
    from switchboard_cdr.store.server_backend import ServerCallStore
    from switchboard_contracts.cdr import CallRecord

    from tests.support import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="sb-grafana-clickhouse-"))
    tcp_port, http_port = free_port(), free_port()
    started = subprocess.run(
        [str(SERVER_SCRIPT), "start", str(data_dir), str(tcp_port), str(http_port)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if started.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        pytest.fail(f"clickhouse-server.sh start failed (exit {started.returncode}):\n{started.stderr}")
    try:
        store = ServerCallStore(port=tcp_port, database="sb_grafana_test")
        try:
            store.migrate()
            store._command("SYSTEM STOP MERGES calls")
            for batch in batches():
                store.insert([CallRecord.model_validate(record) for record in batch])
        finally:
            store.close()
        results: dict[str, Any] = {}
        with Client(host="127.0.0.1", port=tcp_port, database="sb_grafana_test") as client:
            for key, sql in planned.items():
                try:
                    raw_rows, columns = client.execute(sql, with_column_types=True)
                except Exception as exc:
                    results[key] = {"error": str(getattr(exc, "message", exc)).split("Stack trace:")[0]}
                    continue
                results[key] = _rows(columns, raw_rows)
        yield results
    finally:
        subprocess.run(
            [str(SERVER_SCRIPT), "stop", str(data_dir)], capture_output=True, timeout=60, check=False
        )
        shutil.rmtree(data_dir, ignore_errors=True)


# The expander itself ------------------------------------------------------------------------------

CONTEXT = QueryContext(
    TIME_FROM, TIME_TO, 1800, {"tenant": Variable(("acme", "o'hara")), "queue": Variable(ALL, ("800",))}
)


def test_time_macros_expand_as_the_plugin_does() -> None:
    sql = "SELECT $__timeInterval(start) t, $__interval_s i FROM calls WHERE $__timeFilter( start ) AND end <= $__toTime AND start >= $__fromTime"
    assert expand(sql, CONTEXT) == (
        "SELECT toStartOfInterval(toDateTime(start), INTERVAL 1800 second) t, 1800 i FROM calls"
        " WHERE start >= toDateTime(1710403200) AND start <= toDateTime(1710424800)"
        " AND end <= toDateTime(1710424800) AND start >= toDateTime(1710403200)"
    )
    assert expand("$__interval_s", QueryContext(TIME_FROM, TIME_TO, 0.2)) == "1"


def test_conditional_all_and_variables_expand_as_grafana_does() -> None:
    assert expand(TENANT_FILTER, CONTEXT) == "tenant_id IN ('acme','o\\'hara')"
    assert expand("$__conditionalAll(queue_number IN (${queue:singlequote}), $queue)", CONTEXT) == "1=1"
    assert expand("$__conditionalAll(queue_number = f(${queue}, 1), ${queue})", CONTEXT) == "1=1"
    assert expand("x IN ($tenant) AND y = [[queue]]", CONTEXT) == "x IN ('acme','o'hara') AND y = '800'"
    single = QueryContext(TIME_FROM, TIME_TO, 60, {"tenant": Variable("acme")})
    assert expand("tenant_id = '$tenant' AND ${tenant:sqlstring} != ''", single) == (
        "tenant_id = 'acme' AND 'acme' != ''"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT $__timeGroup(start, '1h') FROM calls",
        "SELECT 1 WHERE $__timeFilter_ms(start)",
        "SELECT $__interval FROM calls",
        "SELECT 1 WHERE tenant_id = $nope",
        "SELECT 1 WHERE tenant_id IN (${tenant:json})",
        "SELECT 1 WHERE $__conditionalAll(tenant_id = 'a')",
        "SELECT 1 WHERE $__timeFilter(start",
        "SELECT 1 WHERE $__timeFilter()",
    ],
)
def test_the_expander_rejects_what_it_does_not_know(sql: str) -> None:
    with pytest.raises(MacroError):
        expand(sql, CONTEXT)


# The dashboard files ------------------------------------------------------------------------------


def test_there_are_dashboards() -> None:
    assert [path.name for path in DASHBOARD_FILES] == ["call-history.json"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_uses_only_known_macros_and_the_tenant(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"] and dashboard["title"]
    found = list(panel_targets(path))
    assert len(found) >= 5
    for panel, target in found:
        where = f"{path.name}: panel {panel.get('title')!r}"
        for holder in (panel, target):
            assert holder["datasource"] == {"type": PLUGIN, "uid": DATASOURCE_UID}, where
        assert target.get("editorType") == "sql" and target["rawSql"].strip(), where
        unknown = macro_names(target["rawSql"]) - KNOWN_MACROS
        assert not unknown, f"{where} uses macros the test cannot expand: {sorted(unknown)}"
        assert TENANT_FILTER in target["rawSql"], f"{where} does not filter by the tenant variable"
        for choice in CHOICES.values():
            sql = expand(target["rawSql"], QueryContext(TIME_FROM, TIME_TO, INTERVAL_S, {"tenant": choice}))
            assert "$" not in sql and "[[" not in sql, f"{where}: left unexpanded:\n{sql}"


def test_the_tenant_variable() -> None:
    dashboard = load_dashboard(DASHBOARD_DIR / "call-history.json")
    (tenant,) = [v for v in query_variables(dashboard) if v["name"] == "tenant"]
    assert variable_sql(tenant) == "SELECT DISTINCT tenant_id FROM calls"
    assert tenant["datasource"]["uid"] == DATASOURCE_UID
    assert tenant["includeAll"] is True and tenant["multi"] is True
    assert "allValue" not in tenant or not tenant["allValue"]  # All goes through $__conditionalAll


def test_the_provisioning_files() -> None:
    (datasource,) = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    assert datasource["type"] == PLUGIN and datasource["uid"] == DATASOURCE_UID
    settings = datasource["jsonData"]
    assert settings["protocol"] == "native"
    for key in ("host", "port", "username", "defaultDatabase"):
        assert re.fullmatch(r"\$\{SB_GRAFANA_CLICKHOUSE_[A-Z]+\}", str(settings[key])), key
    assert datasource["secureJsonData"]["password"] == "${SB_GRAFANA_CLICKHOUSE_PASSWORD}"
    (provider,) = yaml.safe_load(PROVIDER_FILE.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] in (GRAFANA_DIR / "README.md").read_text()


# Every panel on both backends -----------------------------------------------------------------

H = 3600
T9, T10, T11, T12 = (int(at(hour).timestamp()) for hour in (9, 10, 11, 12))
CALL_HISTORY = DASHBOARD_DIR / "call-history.json"


class PanelChecks:
    """The panels against one backend's results (the subclasses supply ``results``)."""

    @pytest.fixture
    def results(self) -> dict[str, Any]:
        raise NotImplementedError

    def rows(self, results: Mapping[str, Any], title: str, choice: str = "acme") -> list[dict[str, Any]]:
        for panel, target in panel_targets(CALL_HISTORY):
            if panel["title"] == title:
                result = results[panel_key(CALL_HISTORY, panel, target, choice)]
                assert "error" not in result, f"{title!r} ({choice}) failed: {result['error']}"
                rows: list[dict[str, Any]] = result["rows"]
                return rows
        raise AssertionError(f"no panel {title!r}")

    def test_every_query_runs(self, results: Mapping[str, Any], planned: Mapping[str, str]) -> None:
        failed = {key: result["error"] for key, result in results.items() if "error" in result}
        assert not failed, "\n\n".join(f"{key}:\n{planned[key]}\n-> {error}" for key, error in failed.items())
        assert set(results) == set(planned)

    def test_the_duplicates_are_there(self, results: Mapping[str, Any]) -> None:
        # Each panel below must count the redelivered leg once.
        (row,) = results[DUPLICATES_KEY]["rows"]
        assert row == {"legs": 13, "distinct_legs": 12}

    def test_tenant_variable(self, results: Mapping[str, Any]) -> None:
        result = results["call-history.json|variable:tenant"]
        assert sorted(row["tenant_id"] for row in result["rows"]) == ["acme", "globex"]

    def test_calls_per_hour(self, results: Mapping[str, Any]) -> None:
        rows = self.rows(results, "Calls per hour")
        assert [(row["time"], row["calls"]) for row in rows] == [(T9, 1), (T10, 3), (T11, 1), (T12, 1)]
        assert sum(row["calls"] for row in self.rows(results, "Calls per hour", "all")) == 9

    def test_answered_versus_missed(self, results: Mapping[str, Any]) -> None:
        rows = self.rows(results, "Answered versus missed")
        assert [(row["time"], row["answered"], row["missed"]) for row in rows] == [
            (T9, 1, 0),
            (T10, 2, 1),
            (T11, 1, 0),
            (T12, 0, 1),
        ]
        totals = {choice: self.rows(results, "Answered versus missed (total)", choice) for choice in CHOICES}
        assert totals["acme"] == [{"answered": 4, "missed": 2}]
        assert totals["globex"] == [{"answered": 2, "missed": 1}]
        assert totals["all"] == totals["both"] == [{"answered": 6, "missed": 3}]

    def test_talk_time(self, results: Mapping[str, Any]) -> None:
        rows = self.rows(results, "Talk time")
        assert [(row["time"], row["talk_time"]) for row in rows] == [
            (T9, 555),
            (T10, 180),
            (T11, 90),
            (T12, 0),
        ]
        globex = self.rows(results, "Talk time", "globex")
        assert [(row["time"], row["talk_time"]) for row in globex] == [(T9, 500), (T10, 30)]

    def test_talk_time_per_employee(self, results: Mapping[str, Any]) -> None:
        rows = self.rows(results, "Talk time per employee")
        assert [(r["tenant"], r["employee"], r["calls"], r["talk_time"]) for r in rows] == [
            ("acme", "102", 2, 465),
            ("acme", "101", 3, 405),
            ("acme", "103", 1, 120),
        ]
        everyone = self.rows(results, "Talk time per employee", "all")
        assert [(r["tenant"], r["employee"], r["talk_time"]) for r in everyone][:2] == [
            ("globex", "101", 500),
            ("acme", "102", 465),
        ]

    def test_busiest_numbers(self, results: Mapping[str, Any]) -> None:
        rows = self.rows(results, "Busiest numbers")
        top = [(r["number"], r["calls"], r["as_caller"], r["as_called"], r["talk_time"]) for r in rows[:4]]
        assert top == [
            ("800", 3, 0, 3, 240),
            ("+79255283744", 2, 2, 0, 540),
            ("102", 2, 0, 2, 465),
            ("101", 2, 2, 0, 165),
        ]
        assert {r["tenant"] for r in rows} == {"acme"}
        assert {r["number"] for r in rows[4:]} == {
            "+79031234567",
            "801",
            "+74951234567",
            "+79161112233",
            "103",
        }
        everyone = self.rows(results, "Busiest numbers", "both")
        caller = [(r["tenant"], r["calls"]) for r in everyone if r["number"] == "+79255283744"]
        assert sorted(caller) == [("acme", 2), ("globex", 1)]

    def test_queue_answer_times(self, results: Mapping[str, Any]) -> None:
        columns = ("tenant", "queue", "calls", "answered", "abandoned", "avg_wait", "p50_wait", "p90_wait")
        rows = [tuple(row[c] for c in columns) for row in self.rows(results, "Queue answer times")]
        assert rows == [
            ("acme", "800", 3, 2, 1, 30.0, 30.0, 38.0),
            ("acme", "801", 1, 1, 0, 10.0, 10.0, 10.0),
        ]
        globex = [
            tuple(row[c] for c in columns) for row in self.rows(results, "Queue answer times", "globex")
        ]
        assert globex == [("globex", "800", 1, 1, 0, 100.0, 100.0, 100.0)]
        assert len(self.rows(results, "Queue answer times", "all")) == 3

    def test_time_series_come_with_a_utc_time_column(self, results: Mapping[str, Any]) -> None:
        for panel, target in panel_targets(CALL_HISTORY):
            if panel["type"] == "timeseries":
                result = results[panel_key(CALL_HISTORY, panel, target, "acme")]
                assert result["columns"][0][0] == "time", panel["title"]
                assert result["columns"][0][1] == "DateTime('UTC')", panel["title"]


class TestChdb(PanelChecks):
    @pytest.fixture
    def results(self, chdb_results: dict[str, Any]) -> dict[str, Any]:
        return chdb_results


class TestClickhouseServer(PanelChecks):
    @pytest.fixture
    def results(self, server_results: dict[str, Any]) -> dict[str, Any]:
        return server_results


def test_both_backends_return_the_same_rows(
    chdb_results: dict[str, Any], server_results: dict[str, Any]
) -> None:
    for key in chdb_results:
        chdb_rows, server_rows = chdb_results[key].get("rows"), server_results[key].get("rows")
        if "variable:" in key:  # SELECT DISTINCT without ORDER BY
            chdb_rows, server_rows = sorted(map(repr, chdb_rows or [])), sorted(map(repr, server_rows or []))
        assert chdb_rows == server_rows, key


if __name__ == "__main__":
    _chdb_worker(sys.argv[1], sys.argv[2])
