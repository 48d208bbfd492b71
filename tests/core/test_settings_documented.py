"""Settings once: every environment variable settings.py reads is in docker/.env.example and in the README's
Configuration table, and nothing is documented that the app does not read; every setting the code reads is
defined in settings.py (its only default)."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import global_settings

import b24portal.settings as project_settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_PY = ROOT / "b24portal" / "settings.py"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
README = ROOT / "README.md"
APP_DIRS = ("b24portal", "tenants", "oauth", "installs", "messageservice", "records", "placements", "console",
            "signin", "benchmarks")

# Read by docker/docker-compose.yml only (documented in both lists, never by the app itself).
COMPOSE_ONLY = frozenset({"POSTGRES_PASSWORD"})

_NAME = r"[A-Z][A-Z0-9_]*"
_ENV_READ_RE = re.compile(rf"""\benv(?:\.\w+)?\(\s*["']({_NAME})["']""")
_ENV_LINE_RE = re.compile(rf"^#?\s*({_NAME})=", re.MULTILINE)
_CODE_READ_RES = (
    re.compile(rf"\bsettings\.({_NAME})\b"),
    re.compile(rf"""\bgetattr\(\s*settings\s*,\s*["']({_NAME})["']"""),
    re.compile(rf"""\bconf(?:\.get)?\(\s*["']({_NAME})["']"""),
)


def env_read_in_source() -> set[str]:
    return set(_ENV_READ_RE.findall(SETTINGS_PY.read_text()))


def env_example_names() -> set[str]:
    return set(_ENV_LINE_RE.findall(ENV_EXAMPLE.read_text()))


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table_first_column_names(markdown: str) -> set[str]:
    names: set[str] = set()
    for line in markdown.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        first = line.split("|")[1]
        names.update(re.findall(rf"`({_NAME})`", first))
    return names


def readme_names() -> set[str]:
    return table_first_column_names(readme_section("Configuration"))


def missing_report(lists: dict[str, set[str]]) -> str:
    everything = set().union(*lists.values())
    lines = []
    for where, names in lists.items():
        missing = sorted(everything - names)
        if missing:
            lines.append(f"missing in {where}: {', '.join(missing)}")
    return "\n".join(lines)


def test_env_settings_records_every_variable_settings_py_reads():
    recorded = set(project_settings.ENV_SETTINGS)
    # A read hidden in a branch not taken here (or bypassing `env`) would be missed by the recording.
    assert recorded == env_read_in_source(), missing_report(
        {"ENV_SETTINGS (read at import)": recorded, "settings.py source": env_read_in_source()})
    source = SETTINGS_PY.read_text()
    assert "os.environ" not in source and "getenv" not in source, "read the environment only through `env`"


def test_settings_env_example_and_readme_list_the_same_variables():
    lists = {
        "b24portal/settings.py (ENV_SETTINGS)": set(project_settings.ENV_SETTINGS) | COMPOSE_ONLY,
        "docker/.env.example": env_example_names(),
        "README.md Configuration table": readme_names(),
    }
    assert len(set(map(frozenset, lists.values()))) == 1, "\n" + missing_report(lists)


def test_compose_only_variables_are_not_read_by_the_app():
    assert not COMPOSE_ONLY & set(project_settings.ENV_SETTINGS)


def test_other_readme_setting_tables_name_only_real_settings():
    """The SMS section repeats its settings in a table of its own: it may not name a setting that is gone."""
    text = README.read_text().replace(readme_section("Configuration"), "")
    tables = "\n".join(line for line in text.splitlines() if line.startswith("| `"))
    stale = table_first_column_names(tables) - set(project_settings.ENV_SETTINGS) - COMPOSE_ONLY
    stale = {name for name in stale if re.fullmatch(r"(B24|SMS)_[A-Z0-9_]+", name)}
    assert not stale, f"README names settings the app does not read: {sorted(stale)}"


def code_setting_reads() -> dict[str, str]:
    reads: dict[str, str] = {}
    for folder in APP_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == SETTINGS_PY or "migrations" in path.parts:
                continue
            text = path.read_text()
            for pattern in _CODE_READ_RES:
                for name in pattern.findall(text):
                    reads.setdefault(name, str(path.relative_to(ROOT)))
    return reads


def test_every_setting_the_code_reads_is_defined_in_settings_py():
    reads = code_setting_reads()
    assert "SMS_POLL_CHUNK" in reads and "B24_RATE_HEADROOM" in reads  # the scan itself finds reads
    undefined = {name: where for name, where in reads.items()
                 if not hasattr(project_settings, name) and not hasattr(global_settings, name)}
    assert not undefined, f"settings read in code but not defined in b24portal/settings.py: {undefined}"


def test_the_scanners_see_what_they_should():
    """Guards against a parser that silently finds nothing (then every list would 'agree')."""
    assert len(project_settings.ENV_SETTINGS) > 40
    assert {"SECRET_KEY", "VAR_DIR", "B24_PORTAL_DOMAINS", "SMS_POLL_CHUNK"} <= env_example_names()
    assert {"B24_CLIENT_ID", "B24_CLIENT_SECRET", "B24_CONNECT_TIMEOUT", "SMS_POLL_CHUNK"} <= readme_names()
    assert table_first_column_names("| `A_B`, `C` | `1` | x `NOT_ME` |\n|---|---|---|") == {"A_B", "C"}
