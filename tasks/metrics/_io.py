"""Reading and checking metric input files: UTF-8 text, one segment a line.

Every problem is raised as `MetricInputError` with a one-line message that names the file and,
where there is one, the line. The CLI prints it as `error: ...` and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class MetricInputError(ValueError):
    """Bad metric input: count mismatch, empty file, undecodable bytes, malformed JSON, ..."""


def read_text(path: str | Path) -> str:
    """Returns the whole file decoded as strict UTF-8 (a leading byte-order mark is dropped).

    Raises:
        MetricInputError: missing/unreadable file, empty (0-byte) file, or bytes that are not UTF-8 (the
            message gives the 1-based line of the first bad byte).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MetricInputError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not raw:
        raise MetricInputError(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MetricInputError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def stripped_lines(path: str | Path) -> list[str]:
    """One stripped string per line, split as e2e-metrics reads files (codecs line iteration).

    `codecs` iteration breaks lines at every Unicode line boundary (str.splitlines), not only at
    '\\n'; e2e-metrics' `read_lines` then strips each line. Both are reproduced here.
    """
    return [line.strip() for line in read_text(path).splitlines()]


def grouped_references(path: str | Path) -> list[list[str]]:
    """Reference groups from a file with one reference a line and groups separated by blank lines.

    Mirrors e2e-metrics `read_lines(..., multi_ref=True)`. Blank lines at the end of the file are
    ignored; two blank lines in a row inside the file would make an empty group there, which the
    official script cannot score either, so it is reported as an error.

    Raises:
        MetricInputError: empty file or an empty reference group.
    """
    groups: list[list[str]] = [[]]
    starts = [1]  # 1-based line where each group starts, for error messages
    for number, line in enumerate(stripped_lines(path), start=1):
        if line:
            groups[-1].append(line)
        else:
            groups.append([])
            starts.append(number + 1)
    while groups and not groups[-1]:
        groups.pop()
        starts.pop()
    for group, start in zip(groups, starts):
        if not group:
            raise MetricInputError(f"{path}: line {start}: empty reference group (two blank lines in a row)")
    if not groups:
        raise MetricInputError(f"{path}: file holds no references")
    return groups


def split_newline_lines(path: str | Path) -> list[str]:
    """Lines of a GenerationEval-layout file, split on '\\n' only (as `f.read().split('\\n')`).

    Blank lines are kept (an empty output or a blank reference); the empty string after a final
    newline is not a line, and a trailing '\\r' (CRLF files) is dropped.
    """
    parts = read_text(path).split("\n")
    if parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def check_same_length(
    name_a: str | Path, n_a: int, name_b: str | Path, n_b: int, what_a: str, what_b: str
) -> None:
    """Raises MetricInputError naming the first unmatched line when two inputs differ in length."""
    if n_a == n_b:
        return
    if n_a > n_b:
        raise MetricInputError(
            f"{name_a}: line {n_b + 1}: {n_a} {what_a} but only {n_b} {what_b} in {name_b}"
        )
    raise MetricInputError(
        f"{name_a}: {n_a} {what_a} but {n_b} {what_b} in {name_b} (missing from line {n_a + 1} on)"
    )
