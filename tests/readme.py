"""The documentation's copy-paste snippets, so the tests run exactly what users copy.

A snippet is the code block after an RST comment ``.. snippet: NAME`` (invisible when
rendered), in README.rst or any page under docs/. Names are unique across all of them.
"""

import glob
import os
import re
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.rst")


def pages() -> list:
    """README.rst and every page of the docs site."""
    return [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.rst"),
                                       recursive=True))


def snippet(name: str) -> str:
    pattern = re.compile(
        r"^\.\. snippet: " + re.escape(name) + r"\n\n\.\. code-block:: \S+\n\n((?:   .*\n|\n)+)",
        re.MULTILINE)
    for page in pages():
        with open(page, encoding="utf-8") as file:
            match = pattern.search(file.read())
        if match is not None:
            return textwrap.dedent(match.group(1)).strip() + "\n"
    raise LookupError(f"no page has a snippet {name!r}")
