"""The README's copy-paste snippets, so the tests run exactly what users copy.

A snippet is the code block after an RST comment ``.. snippet: NAME`` (invisible when
the README is rendered).
"""

import os
import re
import textwrap

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.rst")


def snippet(name: str) -> str:
    with open(README, encoding="utf-8") as file:
        text = file.read()
    match = re.search(
        r"^\.\. snippet: " + re.escape(name) + r"\n\n\.\. code-block:: \S+\n\n((?:   .*\n|\n)+)",
        text, re.MULTILINE)
    if match is None:
        raise LookupError(f"README.rst has no snippet {name!r}")
    return textwrap.dedent(match.group(1)).strip() + "\n"
