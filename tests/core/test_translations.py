"""The Russian catalog (locale/ru): every string of the pages portal users see has a Russian translation, and
the committed .mo is the compiled .po.

The strings are read from the source itself (Python's ast for modules, Django's own `templatize`, the step
makemessages uses, for templates), so a string added without running makemessages fails here too, not only
one that makemessages found and nobody translated."""

from __future__ import annotations

import ast
import gettext
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.utils.translation.template import templatize

LOCALE_DIR = Path(settings.BASE_DIR) / "locale" / "ru" / "LC_MESSAGES"
PO_FILE = LOCALE_DIR / "django.po"
MO_FILE = LOCALE_DIR / "django.mo"

# What portal users see: the cabinet, "Sign in with Bitrix24", the widgets (slider, app page, SMS-consent field)
# and the delivery status words those pages show.
USER_FACING_DIRS = ("templates/cabinet", "templates/signin", "templates/placements", "cabinet", "signin", "placements")
USER_FACING_FILES = ("messageservice/status.py",)

# gettext and friends: the msgid is the first string argument; the p* forms take a context first.
SINGULAR = {"_", "gettext", "gettext_lazy", "gettext_noop", "ngettext", "ngettext_lazy"}
WITH_CONTEXT = {"pgettext", "pgettext_lazy", "npgettext", "npgettext_lazy"}

Key = tuple[str, str]  # (msgctxt or "", msgid)


def _user_facing(path: str) -> bool:
    return path in USER_FACING_FILES or any(path.startswith(d + "/") for d in USER_FACING_DIRS)


def _source_files() -> Iterator[Path]:
    base = Path(settings.BASE_DIR)
    for folder in USER_FACING_DIRS:
        for path in sorted((base / folder).rglob("*")):
            if path.suffix in (".py", ".html") and "migrations" not in path.parts:
                yield path
    for name in USER_FACING_FILES:
        yield base / name


def _python_strings(source: str) -> Iterator[Key]:
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        texts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if name in SINGULAR and texts:
            yield "", texts[0]
        elif name in WITH_CONTEXT and len(texts) >= 2:
            yield texts[0], texts[1]


def _template_strings(source: str, origin: str) -> Iterator[Key]:
    """templatize blanks out everything but the translatable strings, left as gettext(...) calls; read those
    calls token by token (the result is Python-like, not a whole Python module)."""
    flat = "\n".join(line.strip() for line in templatize(source, origin=origin).splitlines())  # no indents
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(flat).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
    for i, token in enumerate(tokens[:-2]):
        if token.type != tokenize.NAME or tokens[i + 1].string != "(":
            continue
        strings: list[str] = []
        for following in tokens[i + 2:]:
            if following.type == tokenize.STRING:
                strings.append(ast.literal_eval(following.string))
            elif following.string != ",":
                break
        if token.string in SINGULAR and strings:
            yield "", strings[0]
        elif token.string in WITH_CONTEXT and len(strings) >= 2:
            yield strings[0], strings[1]


def user_facing_strings() -> dict[Key, str]:
    """Every translatable string of the user-facing source → where it was found."""
    found: dict[Key, str] = {}
    base = Path(settings.BASE_DIR)
    for path in _source_files():
        relative = path.relative_to(base).as_posix()
        source = path.read_text(encoding="utf-8")
        keys = _python_strings(source) if path.suffix == ".py" else _template_strings(source, relative)
        for key in keys:
            found.setdefault(key, relative)
    return found


def catalog() -> polib.POFile:
    return polib.pofile(str(PO_FILE))


def _is_translated(entry: polib.POEntry) -> bool:
    if entry.msgid_plural:
        return bool(entry.msgstr_plural) and all(text.strip() for text in entry.msgstr_plural.values())
    return bool(entry.msgstr.strip())


def test_the_source_scan_finds_the_strings_of_each_kind_of_source() -> None:
    found = user_facing_strings()

    # one of each: a {% translate %}, a {% blocktranslate count %}, a _() inside a template tag, gettext in a
    # view, gettext_lazy in a module constant, gettext_noop marking a reason shown later
    for msgid in ("My SMS cabinet", "Delivery, last %(n)s day", "All sync jobs", "Template saved.",
                  "First name", "frame token expired; reopen the widget", "Sign in with Bitrix24"):
        assert ("", msgid) in found, msgid


def test_every_string_portal_users_see_has_a_russian_translation() -> None:
    entries = {(entry.msgctxt or "", entry.msgid): entry for entry in catalog() if not entry.obsolete}

    missing = sorted(f"{where}: {msgid!r}" for (context, msgid), where in user_facing_strings().items()
                     if (context, msgid) not in entries or entries[(context, msgid)].fuzzy
                     or not _is_translated(entries[(context, msgid)]))

    assert not missing, ("strings without a Russian translation (run manage.py makemessages -l ru --ignore=.venv "
                         "--ignore=tests --ignore=benchmarks, translate, compilemessages):\n" + "\n".join(missing))


def test_every_catalog_entry_from_a_user_facing_file_is_translated_and_none_is_fuzzy() -> None:
    po = catalog()

    untranslated = [entry.msgid for entry in po if not entry.obsolete
                    and any(_user_facing(path) for path, _line in entry.occurrences) and not _is_translated(entry)]

    assert not untranslated
    assert not [entry.msgid for entry in po if entry.fuzzy]  # gettext ignores a fuzzy entry: it shows English
    assert not po.obsolete_entries()


def test_russian_plural_entries_fill_every_form_of_the_catalogs_plural_rule() -> None:
    po = catalog()
    forms = int(po.metadata["Plural-Forms"].split("nplurals=")[1].split(";")[0])

    plurals = [entry for entry in po if entry.msgid_plural and not entry.obsolete]

    assert plurals
    assert all(sorted(entry.msgstr_plural) == list(range(forms)) for entry in plurals)


def test_translations_keep_every_placeholder_of_their_msgid() -> None:
    placeholder = re.compile(r"%\(\w+\)[sd]|\{\w+\}")
    wrong = []
    for entry in catalog():
        if entry.obsolete or not _is_translated(entry):
            continue
        texts = entry.msgstr_plural.values() if entry.msgid_plural else [entry.msgstr]
        expected = sorted(placeholder.findall(entry.msgid_plural or entry.msgid))
        wrong += [(entry.msgid, text) for text in texts if sorted(placeholder.findall(text)) != expected]

    assert not wrong


def test_the_committed_mo_is_the_compiled_po(tmp_path: Path) -> None:
    """Compiled again (polib, as msgfmt would: translated, non-fuzzy entries), the .po gives the same catalog
    as the committed .mo: same messages, same plural rule."""
    fresh = tmp_path / "django.mo"
    catalog().save_as_mofile(str(fresh))

    with MO_FILE.open("rb") as committed_file, fresh.open("rb") as fresh_file:
        committed = gettext.GNUTranslations(committed_file)
        compiled = gettext.GNUTranslations(fresh_file)

    def messages(translations: gettext.GNUTranslations) -> dict[object, str]:
        return {key: text for key, text in translations._catalog.items() if key != ""}  # type: ignore[attr-defined]

    assert messages(committed) == messages(compiled), "locale/ru: run manage.py compilemessages and commit the .mo"
    assert [committed.plural(n) for n in range(200)] == [compiled.plural(n) for n in range(200)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("n", [1, 2, 5, 11, 21, 22, 25])
def test_the_catalogs_plural_rule_picks_the_russian_form(n: int) -> None:
    with MO_FILE.open("rb") as mo:
        plural = gettext.GNUTranslations(mo).plural  # type: ignore[attr-defined]

    # one (1, 21), few (2-4, 22), many (5-20, 25)
    assert plural(n) == {1: 0, 21: 0, 2: 1, 22: 1, 5: 2, 11: 2, 25: 2}[n]
