"""What `docker build` sends: the build context filtered by a .dockerignore, as Docker reads it.

Docker's rules (moby/patternmatcher, as BuildKit applies them):
- one pattern a line; `#` starts a comment line; a leading `/` and `./` are dropped and the
  pattern is cleaned (`a/b/` is `a/b`);
- `*` matches within one path segment, `?` one character of a segment, `[...]` a class,
  `**` any number of segments (none too), `\\` escapes;
- a pattern matches a path when it matches the path itself or one of its parent directories;
- `!pattern` is an exception: it sends again what an earlier pattern left out;
- the last pattern that matches a path decides.
Which file: `<Dockerfile>.dockerignore` beside the Dockerfile, else `.dockerignore` at the
context's root, else nothing is left out.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without its `!`
    exception: bool
    regex: re.Pattern[str]


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*" and pattern[i + 1 : i + 2] == "*":
            i += 1
            if pattern[i + 1 : i + 2] == "/":  # `**/` is `**`: it may match no directory
                i += 1
            out += ".*" if i + 1 == len(pattern) else "(.*/)?"
        elif c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i + 1)
            out += pattern[i : end + 1]  # Go's class syntax is the regex one, `^` negating
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(f"^{out}$")


def parse(text: str) -> list[Pattern]:
    """The patterns of a .dockerignore's text, in order."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line[1:].strip() if exception else line
        cleaned = posixpath.normpath(line).lstrip("/")
        if cleaned in ("", "."):
            continue
        patterns.append(Pattern(cleaned, exception, _regex(cleaned)))
    return patterns


def _matches(pattern: Pattern, path: str) -> bool:
    parts = path.split("/")
    return any(pattern.regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def ignored(path: str, patterns: list[Pattern]) -> bool:
    """Whether `path` (relative to the context, `/`-separated) stays out of the build."""
    verdict = False
    for pattern in patterns:
        if _matches(pattern, path):
            verdict = not pattern.exception
    return verdict


def ignore_file(dockerfile: Path, context: Path) -> Path | None:
    """The .dockerignore Docker reads for this Dockerfile and context, if any."""
    for candidate in (
        dockerfile.parent / f"{dockerfile.name}.dockerignore",
        context / ".dockerignore",
    ):
        if candidate.is_file():
            return candidate
    return None


def _may_hold_exceptions(directory: str, patterns: list[Pattern]) -> bool:
    """Whether an exception could send back something under an ignored directory."""
    return any(
        p.exception and (p.text.startswith(f"{directory}/") or re.search(r"[*?\[\\]", p.text))
        for p in patterns
    )


def context_files(dockerfile: Path, context: Path) -> list[str]:
    """Every file the build of `dockerfile` sends from `context`, relative and sorted."""
    found = ignore_file(dockerfile, context)
    patterns = parse(found.read_text()) if found else []
    sent = []
    for directory, subdirs, files in os.walk(context):
        here = Path(directory).relative_to(context).as_posix()
        prefix = "" if here == "." else f"{here}/"
        # Docker also skips an ignored directory unless an exception may look inside it.
        subdirs[:] = [
            s
            for s in subdirs
            if not ignored(prefix + s, patterns) or _may_hold_exceptions(prefix + s, patterns)
        ]
        sent += [prefix + f for f in files if not ignored(prefix + f, patterns)]
    return sorted(sent)
