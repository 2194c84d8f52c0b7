"""Table names: the `tables` setting's patterns, and how a served table is named in a URL.

Patterns follow psql's `\\dt` rules, which PostgreSQL users already know: `schema.name`, either part
in double quotes to keep its case and its dots (`"Sales"."Order Items"`, `""` for a quote inside), an
unquoted part folded to lower case, `*` and `?` as wildcards outside quotes. A pattern without a
schema matches the tables the database's search_path makes visible (as an unqualified name in SQL does).

A table's name in a URL is exact (no case folding): `orders` for a table visible without its schema,
`sales.orders` otherwise; a part holding a dot or starting with a double quote is quoted as in SQL
(`"odd.name"`, `sales."odd.name"`). /tables lists every served table with its URLs, ready to use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class BadName(ValueError):
    """A pattern or a URL name that cannot be read; the message says why."""


@dataclass(frozen=True)
class Part:
    """One part of a pattern (or name): its text, and whether wildcards in it are live."""

    text: str
    # Unquoted text with * or ? in it: a pattern. Quoted text, or text without them: a literal name.
    wildcard: bool

    def regex(self) -> str:
        if not self.wildcard:
            return re.escape(self.text)
        return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in self.text)


@dataclass(frozen=True)
class Pattern:
    """schema.name (schema None: the tables visible through search_path)."""

    text: str
    schema: Part | None
    name: Part
    _schema_re: re.Pattern[str] | None
    _name_re: re.Pattern[str]

    @property
    def exact(self) -> bool:
        """Names one table (no wildcard): one that is missing is a start-up error, not a quiet miss."""
        return not self.name.wildcard and (self.schema is None or not self.schema.wildcard)

    def matches(self, schema: str, name: str, visible: bool) -> bool:
        if self._schema_re is None:
            return visible and self._name_re.fullmatch(name) is not None
        return self._schema_re.fullmatch(schema) is not None and self._name_re.fullmatch(name) is not None


def _parts(text: str) -> list[Part]:
    """A pattern split on unquoted dots, unquoted text folded to lower case (psql's rules)."""
    parts: list[Part] = []
    current: list[str] = []
    wildcard = False
    quoted_any = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            end = i + 1
            while True:
                end = text.find('"', end)
                if end < 0:
                    raise BadName(f"{text!r}: a double quote is not closed")
                if text[end + 1 : end + 2] == '"':
                    end += 2
                    continue
                break
            current.append(text[i + 1 : end].replace('""', '"'))
            quoted_any = True
            i = end + 1
            continue
        if ch == ".":
            parts.append(_part(current, wildcard, quoted_any, text))
            current, wildcard, quoted_any = [], False, False
        else:
            if ch in "*?":
                wildcard = True
            current.append(ch.lower())
        i += 1
    parts.append(_part(current, wildcard, quoted_any, text))
    return parts


def _part(chars: list[str], wildcard: bool, quoted: bool, text: str) -> Part:
    joined = "".join(chars)
    if not joined and not quoted:
        raise BadName(f"{text!r}: an empty name (two dots, or a dot at an end)")
    return Part(joined, wildcard)


def parse_pattern(text: str) -> Pattern:
    text = text.strip()
    if not text:
        raise BadName("an empty pattern")
    parts = _parts(text)
    if len(parts) > 2:
        raise BadName(f"{text!r}: at most schema.name (a database name is not part of a pattern)")
    schema, name = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    schema_re = None if schema is None else re.compile(schema.regex(), re.DOTALL)
    return Pattern(text, schema, name, schema_re, re.compile(name.regex(), re.DOTALL))


def parse_patterns(items: tuple[str, ...]) -> tuple[Pattern, ...]:
    return tuple(parse_pattern(item) for item in items)


def split_list(text: str) -> list[str]:
    """A comma-separated list whose items may hold commas inside double quotes ("a,b".c, sales.*)."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_url_name(text: str) -> tuple[str | None, str]:
    """(schema or None, name) of a table as a URL names it: exact text; a part that starts with a double
    quote runs to the closing one ("" inside for a quote), any other part to the next dot."""
    parts: list[str] = []
    position = 0
    while True:
        if text.startswith('"', position):
            end = position + 1
            while True:
                end = text.find('"', end)
                if end < 0:
                    raise BadName(f"{text!r}: a double quote is not closed")
                if not text.startswith('""', end):
                    break
                end += 2
            parts.append(text[position + 1 : end].replace('""', '"'))
            position = end + 1
            if position < len(text) and text[position] != ".":
                raise BadName(f"{text!r}: a quoted name must end at a dot or at the end")
        else:
            dot = text.find(".", position)
            parts.append(text[position : len(text) if dot < 0 else dot])
            position = len(text) if dot < 0 else dot
        if position >= len(text):
            break
        position += 1
    if len(parts) > 2:
        raise BadName("more than schema.name (quote a name that holds a dot)")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _url_part(text: str) -> str:
    if "." in text or text.startswith('"') or not text:
        return '"' + text.replace('"', '""') + '"'
    return text


def url_name(schema: str, name: str, qualified: bool) -> str:
    """How a URL names the table: unqualified where search_path makes it visible (and `qualified` is False)."""
    return f"{_url_part(schema)}.{_url_part(name)}" if qualified else _url_part(name)
