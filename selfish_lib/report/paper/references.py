"""The paper's bibliography: a BibTeX file read with pybtex, citations in author-year form.

The paper's sources cite with ``[@key]`` (or ``[@a; @b]``); the chapters' prose cites by
author and year, as "Yu et al., 2022" or "(Gao et al., 2019)", and each such mention of an
entry of the file becomes a link to it. The list at the end holds the entries cited
anywhere in the paper, sorted by author and year, each with the id ``ref-<key>`` that its
citations link to.
"""

from __future__ import annotations

import codecs
import contextlib
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import latexcodec  # noqa: F401 (registers the 'ulatex' codec)
from pybtex.database import BibliographyData, Entry, parse_file
from pybtex.plugin import find_plugin

from ...engine.validation import ParameterError

CITATION = re.compile(r"\[(@[\w:-]+(?:\s*;\s*@[\w:-]+)*)\]")
NO_YEAR = "n.d."


class CitationError(ValueError):
    """A citation of a key the bibliography does not hold."""


@dataclass(frozen=True)
class Reference:
    """One entry: its key, the authors and year of its citations, its formatted HTML."""

    key: str
    authors: str  # 'Holm', 'Press and Wolf', 'Gao et al.'
    surname: str  # the first author's, to sort by
    year: str
    html: str

    @property
    def label(self) -> str:
        """'Gao et al., 2019', 'Press and Wolf, 2017', 'Holm, 1979'."""
        return f"{self.authors}, {self.year}"

    @property
    def anchor(self) -> str:
        """The id of the entry in the list, which its citations link to."""
        return f"ref-{self.key}"


class Bibliography:
    """The entries of a BibTeX file, the citations made so far and the list they give."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ParameterError("bibliography", str(path), "an existing BibTeX file")
        data = parse_file(str(path), bib_format="bibtex")
        self.path = path
        self.references = _formatted(data)
        self.cited: list[str] = []  # keys, in the order of their first citation

    def __contains__(self, key: str) -> bool:
        return key in self.references

    def cite(self, keys: Iterable[str]) -> str:
        """The HTML of one citation of ``keys``: '(Gao et al., 2019; Yu et al., 2022)', each
        label a link to its entry. An unknown key raises CitationError naming it."""
        links = [self._link(key) for key in keys]
        return "(" + "; ".join(links) + ")"

    def _link(self, key: str, text: str | None = None) -> str:
        if key not in self.references:
            known = ", ".join(sorted(self.references))
            raise CitationError(f"citation [@{key}]: no such entry in {self.path.name} ({known})")
        if key not in self.cited:
            self.cited.append(key)
        reference = self.references[key]
        shown = html.escape(text if text is not None else reference.label)
        return f'<a class="citation" href="#{reference.anchor}">{shown}</a>'

    def replace_citations(self, markdown: str) -> str:
        """``markdown`` with each ``[@key]`` / ``[@a; @b]`` replaced by its citation's HTML."""

        def one(match: re.Match) -> str:
            keys = [k.strip().lstrip("@") for k in match.group(1).split(";")]
            return self.cite(keys)

        return CITATION.sub(one, markdown)

    def link_mentions(self, text_html: str) -> str:
        """``text_html`` (rendered prose) with each author-year mention of an entry ("Yu et
        al., 2022", "Yu et al. 2022", "Holm (1979)") made a link to it. Text inside tags,
        code and existing links is left alone."""
        for key, reference in self.references.items():
            if reference.year == NO_YEAR:
                continue
            authors = re.escape(reference.authors).replace(r"\ ", r"\s+")
            year = re.escape(reference.year)
            pattern = re.compile(rf"(?<![\w>]){authors},?\s+(?:\({year}\)|{year}\b)")
            text_html = replace_outside_tags(
                pattern, lambda m, key=key: self._link(key, m.group(0)), text_html
            )
        return text_html

    def list_html(self) -> str:
        """The references section's list: every cited entry, by author and year."""
        cited = sorted(
            (self.references[key] for key in self.cited),
            key=lambda r: (r.surname.lower(), r.year, r.key),
        )
        items = [
            f'<li id="{r.anchor}"><span class="reference-label">{html.escape(r.label)}</span> '
            f"{r.html}</li>"
            for r in cited
        ]
        return '<ol class="references">\n' + "\n".join(items) + "\n</ol>"


def _formatted(data: BibliographyData) -> dict[str, Reference]:
    """Each entry of ``data`` formatted in HTML (pybtex's 'unsrt' style)."""
    style = find_plugin("pybtex.style.formatting", "unsrt")()
    backend = find_plugin("pybtex.backends", "html")()
    formatted = {e.key: e.text.render(backend) for e in style.format_entries(data.entries.values())}
    out = {}
    for key, entry in data.entries.items():
        surnames = _surnames(entry) or [key]
        if len(surnames) == 1:
            authors = surnames[0]
        elif len(surnames) == 2:
            authors = f"{surnames[0]} and {surnames[1]}"
        else:
            authors = f"{surnames[0]} et al."
        year = str(entry.fields.get("year", NO_YEAR))
        out[key] = Reference(key, authors, surnames[0], year, formatted[key].replace("\n", " "))
    return out


def _surnames(entry: Entry) -> list[str]:
    """The authors' (or editors') last names as plain text: LaTeX accents decoded
    (latexcodec's 'ulatex' codec, which pybtex depends on), braces dropped."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = []
    for person in persons:
        raw = " ".join(person.last_names) or " ".join(person.first_names)
        with contextlib.suppress(LookupError, ValueError):  # left as written
            raw = codecs.decode(raw, "ulatex")
        names.append(raw.replace("{", "").replace("}", ""))
    return names


# Spans whose text is never touched: code, preformatted blocks, links; and any tag itself.
_PROTECTED = re.compile(r"<(code|pre|a)\b.*?</\1\s*>|<[^>]*>", re.DOTALL | re.IGNORECASE)


def replace_outside_tags(pattern: re.Pattern, replace, text_html: str) -> str:
    """``pattern.sub(replace, ...)`` over the text between tags only: never inside a tag,
    a code span, a preformatted block or a link."""
    out, position = [], 0
    for match in _PROTECTED.finditer(text_html):
        out.append(pattern.sub(replace, text_html[position : match.start()]))
        out.append(match.group(0))
        position = match.end()
    out.append(pattern.sub(replace, text_html[position:]))
    return "".join(out)
