"""The documentation against the repository: no binary, no network.

* Every configuration key in config/tlsfront.toml (the shipped example, where
  keys are written commented out) is in the tables of docs/configuration.md,
  every key in those tables is in the file, and for the plain tables
  ([listen] ... [acme]) the default shown is the file's value. Adding a key
  to the file without documenting it fails here, as does documenting a key
  that does not exist.
* README.md stays short enough to read in five minutes (at most 250 lines).
* Every relative link in README.md, docs/*.md and the folders' READMEs
  (docker/README.md, ...) points to a file that exists, and a link with an anchor (file.md#anchor, or #anchor in the same
  file) to a heading of that file, with GitHub's anchor names.

Key names are written in full, "table.key": `limits.idle_timeout` is
`idle_timeout` in [limits]; keys of an array of tables are named after the
array, `route.host` for `host` in a [[route]] table and
`tls.certificate.cert` for `cert` in a [[tls.certificate]] table; a table
nested under a [[route]] that takes the keys of a top-level table
([route.cookies] takes any [cookies] key) is `route.cookies.*`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "config" / "tlsfront.toml"
CONFIG_DOC = REPO_ROOT / "docs" / "configuration.md"
README = REPO_ROOT / "README.md"
README_MAX_LINES = 250

# ---------------------------------------------------------------------------
# config/tlsfront.toml

# A table header, written or commented out: "[limits]", "# [[route]]",
# "#   [route.cookies]            # any [cookies] key".
HEADER_RE = re.compile(r"^(#\s*)?\[(\[)?\s*([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\s*\](\])?\s*(#.*)?$")
# A key, written or commented out: "idle_timeout = "1m"", "# https = ...",
# "#   host = ""   # comment". Prose never starts with a lower-case word
# followed by " = ".
KEY_RE = re.compile(r"^(#\s*)?([a-z_][a-z0-9_]*)\s*=\s*(.*?)\s*(#.*)?$")


@dataclass(frozen=True)
class ConfigKey:
    name: str  # full dotted name
    value: str  # the value as written the first time the key appears
    line: int
    plain: bool  # in a real (not commented-out) table, written "# key = value" or "key = value"


def config_keys(text: str) -> dict[str, ConfigKey]:
    """Every key of the shipped config, by full dotted name."""
    keys: dict[str, ConfigKey] = {}
    top_tables: set[str] = set()
    array_tables: set[str] = set()
    table: str | None = None
    table_is_real = False
    for number, line in enumerate(text.splitlines(), start=1):
        header = HEADER_RE.match(line)
        if header:
            commented, double_open, name, double_close = header.group(1, 2, 3, 4)
            assert bool(double_open) == bool(double_close), f"line {number}: unbalanced header: {line!r}"
            table = name
            table_is_real = commented is None
            if double_open:
                array_tables.add(name)
            elif table_is_real and "." not in name:
                top_tables.add(name)
            parent, _, child = name.rpartition(".")
            if not double_open and parent in array_tables and child in top_tables:
                # [route.cookies] under [[route]]: any key of [cookies].
                keys.setdefault(f"{name}.*", ConfigKey(f"{name}.*", "", number, False))
            continue
        key = KEY_RE.match(line)
        if not key:
            continue
        assert table is not None, f"line {number}: key outside any table: {line!r}"
        name, value = key.group(2), key.group(3)
        parent, _, child = table.rpartition(".")
        if parent in array_tables and child in top_tables:
            assert f"{child}.{name}" in keys, (
                f"config/tlsfront.toml line {number}: [{table}] sets {name}, which [{child}] does not have"
            )
            continue  # documented as {table}.*
        full = f"{table}.{name}"
        # "# key = value" (one space) in a real table is the key's default;
        # indented "#   key = ..." lines are examples or array-table keys.
        written_plainly = not line.startswith("#") or (line.startswith("# ") and not line.startswith("#  "))
        plain = table_is_real and written_plainly
        keys.setdefault(full, ConfigKey(full, value, number, plain))
    return keys


# ---------------------------------------------------------------------------
# Markdown


def strip_fences(markdown: str) -> str:
    """The text with the lines of fenced code blocks blanked (line numbers kept)."""
    out: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = None
            out.append("")
            continue
        m = re.match(r"(`{3,}|~{3,})", stripped)
        if m:
            fence = m.group(1)
            out.append("")
            continue
        out.append(line)
    return "\n".join(out)


def strip_code(markdown: str) -> str:
    """The text without code blocks and inline code spans: a link written
    in them is not a link."""
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", strip_fences(markdown))


def headings(markdown: str) -> list[str]:
    """ATX headings outside code blocks, as written (without the #s)."""
    return re.findall(r"(?m)^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", strip_fences(markdown))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text, lower case,
    without punctuation other than '-' and '_', spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = text.strip().lower()
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_ " or cat[0] in "LMN":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor of a Markdown file: headings (duplicates get -1, -2, ...)
    and explicit HTML ids and names."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in headings(markdown):
        slug = github_slug(heading)
        if slug in seen:
            seen[slug] += 1
            result.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            result.add(slug)
    result.update(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", markdown))
    return result


LINK_RE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF_RE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)


def links(markdown: str) -> list[str]:
    text = strip_code(markdown)
    return LINK_RE.findall(text) + REF_DEF_RE.findall(text)


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


@dataclass(frozen=True)
class Row:
    key: str
    default: str


def documented_keys(markdown: str) -> dict[str, Row]:
    """The rows of every table whose header starts with "key" and has a
    "default" column: key name (the code span in the first cell) -> row."""
    rows: dict[str, Row] = {}
    lines = strip_fences(markdown).splitlines()
    i = 0
    while i < len(lines):
        cells = table_cells(lines[i])
        if cells and cells[0].lower() == "key" and i + 1 < len(lines) and is_separator(lines[i + 1]):
            names = [c.lower() for c in cells]
            default_col = names.index("default") if "default" in names else None
            i += 2
            while i < len(lines) and table_cells(lines[i]):
                row = table_cells(lines[i])
                m = re.fullmatch(r"`([^`]+)`", row[0])
                assert m, f"docs/configuration.md: first cell is not one `key`: {lines[i]!r}"
                key = m.group(1)
                assert key not in rows, f"docs/configuration.md: {key} is documented twice"
                rows[key] = Row(key, row[default_col] if default_col is not None and default_col < len(row) else "")
                i += 1
            continue
        i += 1
    return rows


def table_cells(line: str) -> list[str]:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")) or len(line) < 2:
        return []
    # Split on | not escaped as \|.
    cells = re.split(r"(?<!\\)\|", line[1:-1])
    return [c.strip() for c in cells]


def is_separator(line: str) -> bool:
    cells = table_cells(line)
    return bool(cells) and all(re.fullmatch(r":?-{3,}:?", c) for c in cells)


def code_span_value(cell: str) -> str | None:
    m = re.match(r"`([^`]+)`", cell)
    return m.group(1) if m else None


def normalise(value: str) -> str:
    return re.sub(r"\s+", " ", value.strip())


# ---------------------------------------------------------------------------
# The tests


@pytest.fixture(scope="module")
def shipped() -> dict[str, ConfigKey]:
    keys = config_keys(CONFIG.read_text(encoding="utf-8"))
    # The parser finds the file's keys at all (a format change that hides
    # them must not make the comparison below vacuous).
    assert len(keys) > 50 and "limits.idle_timeout" in keys and "route.host" in keys, sorted(keys)
    return keys


@pytest.fixture(scope="module")
def documented() -> dict[str, Row]:
    rows = documented_keys(CONFIG_DOC.read_text(encoding="utf-8"))
    assert rows, "docs/configuration.md has no key tables"
    return rows


def test_every_config_key_is_documented(shipped, documented):
    missing = [f"{k.name} (config/tlsfront.toml line {k.line})" for k in shipped.values() if k.name not in documented]
    assert not missing, (
        "keys in config/tlsfront.toml without a row in the tables of docs/configuration.md "
        "(add one: | `key` | `default` | what it does |):\n  " + "\n  ".join(missing)
    )


def test_every_documented_key_exists(shipped, documented):
    unknown = sorted(set(documented) - set(shipped))
    assert not unknown, (
        "keys in the tables of docs/configuration.md that config/tlsfront.toml does not have "
        "(a typo, or a key removed or renamed):\n  " + "\n  ".join(unknown)
    )


def test_documented_defaults_are_the_shipped_values(shipped, documented):
    wrong = []
    for key in shipped.values():
        if not key.plain or key.name not in documented:
            continue
        shown = code_span_value(documented[key.name].default)
        if shown is None or normalise(shown) != normalise(key.value):
            wrong.append(f"{key.name}: config/tlsfront.toml says {key.value}, docs/configuration.md says {documented[key.name].default!r}")
    assert not wrong, "defaults in docs/configuration.md that differ from config/tlsfront.toml:\n  " + "\n  ".join(wrong)


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move reference material to docs/"
    )


def markdown_files() -> list[Path]:
    """README.md, docs/*.md, and the READMEs of the folders (docker/,
    bench/, fuzz/, tests/long/, ...), which link into the first two."""
    folders = [*REPO_ROOT.glob("*/README.md"), *REPO_ROOT.glob("tests/*/README.md")]
    return [
        README,
        *sorted((REPO_ROOT / "docs").glob("*.md")),
        *sorted(p for p in folders if not p.parent.name.startswith(".")),
    ]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(path: Path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in links(text):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / file_part).resolve()
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO_ROOT) if dest.is_relative_to(REPO_ROOT) else dest}")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md":
            if anchor not in anchors(dest.read_text(encoding="utf-8")):
                broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO_ROOT)}")
    assert not broken, f"broken links in {path.relative_to(REPO_ROOT)}:\n  " + "\n  ".join(broken)


# The helpers above decide what the tests see; these pin their behaviour on
# small inputs, so a helper that silently finds nothing cannot pass the tests.


def test_config_key_extraction():
    sample = (
        "[listen]\n"
        "# https = \"0.0.0.0:8443\"\n"
        "# Prose that mentions path = \"/admin\" in the middle.\n"
        "real = 1\n"
        "[limits]\n"
        "# idle_timeout = \"1m\"\n"
        "[cookies]\n"
        "# secure = true\n"
        "# [[route]]\n"
        "#   host = \"\"                  # comment\n"
        "#   [route.cookies]            # any [cookies] key\n"
        "#   secure = false\n"
    )
    keys = config_keys(sample)
    assert set(keys) == {"listen.https", "listen.real", "limits.idle_timeout", "cookies.secure", "route.host", "route.cookies.*"}
    assert keys["listen.https"].value == '"0.0.0.0:8443"' and keys["listen.https"].plain
    assert not keys["route.host"].plain and keys["route.host"].value == '""'
    with pytest.raises(AssertionError, match="does not have"):
        config_keys(sample + "#   nonsense = 1\n")


def test_slugs_and_links():
    assert github_slug("Three broken configs, as `tlsfront check` reports them") == "three-broken-configs-as-tlsfront-check-reports-them"
    assert github_slug("`[tls]` and `[[tls.certificate]]`") == "tls-and-tlscertificate"
    assert github_slug("HTTP/2 and TLS servers") == "http2-and-tls-servers"
    assert github_slug("Behind an L4 load balancer: the PROXY protocol") == "behind-an-l4-load-balancer-the-proxy-protocol"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
    assert links("[x](a.md#b) `[y](c.md)`\n```\n[z](d.md)\n```\n[r]: e.md\n") == ["a.md#b", "e.md"]
    assert documented_keys("| key | default | what |\n|---|---|---|\n| `a.b` | `1` | x |\n") == {"a.b": Row("a.b", "`1`")}
