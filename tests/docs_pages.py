"""
What the docs pages show, read by the tests that hold the pages to it.
"""

from __future__ import annotations

import re
import textwrap

from pathlib import Path


DOCS = Path(__file__).parent.parent / "docs"

_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: (?P<language>\S+)$")


def code_blocks(page: str, language: str) -> list[str]:
    """
    The ``.. code-block:: <language>`` blocks of *page* (a path under
    ``docs/``), in order, dedented, without their surrounding blank lines.
    """
    lines = (DOCS / page).read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        directive = _DIRECTIVE.match(line)
        if directive is None or directive["language"] != language:
            continue
        indent = len(directive["indent"])
        body = []
        for following in lines[number + 1 :]:
            if (
                following.strip()
                and len(following) - len(following.lstrip(" ")) <= indent
            ):
                break
            body.append(following)
        found.append(textwrap.dedent("\n".join(body)).strip("\n"))
    return found
