"""Reading and checking metric input files: UTF-8 text, one segment a line.

Every problem is raised as `MetricInputError` with a one-line message that names the file and,
where there is one, the line. The CLI prints it as `error: ...` and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class MetricInputError(ValueError):
    """Bad metric input: count mismatch, empty file, undecodable bytes, malformed JSON, ..."""


def read_text(path: str | Path, keep_bom: bool = False) -> str:
    """Returns the whole file decoded as strict UTF-8.

    Args:
        keep_bom: keep a leading byte-order mark as the character U+FEFF (as `codecs.open(...,
            'UTF-8')` does, so e2e-metrics glues it to the first word); False drops it.

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
    return text[1:] if text.startswith("\ufeff") and not keep_bom else text


def stripped_lines(path: str | Path, keep_bom: bool = False) -> list[str]:
    """One stripped string per line, split as e2e-metrics reads files (codecs line iteration).

    `codecs` iteration breaks lines at every Unicode line boundary (str.splitlines), not only at
    '\\n'; e2e-metrics' `read_lines` then strips each line (Python's whitespace set). Both are
    reproduced here.
    """
    return [line.strip() for line in read_text(path, keep_bom).splitlines()]


def grouped_references(path: str | Path, keep_bom: bool = False) -> list[list[str]]:
    """Reference groups as e2e-metrics `load_data` reads a plain-text references file.

    `read_lines(..., multi_ref=True)`: one reference a line, groups separated by blank lines, one
    empty group at the end dropped. A file that then holds a single group has no separating
    blank line and is read as one reference per MR (`data_ref = [[inst] for inst in ...]`).
    Where the official script would get an empty group (two blank lines in a row, or a file
    ending in two or more blank lines: it fails with an AssertionError or scores garbage), this
    raises an error naming the line.

    Raises:
        MetricInputError: a file of no references, or an empty reference group.
    """
    lines = stripped_lines(path, keep_bom)
    if not any(lines):
        raise MetricInputError(f"{path}: file holds no references")
    groups: list[list[str]] = [[]]
    starts = [1]  # 1-based line where each group starts, for error messages
    for number, line in enumerate(lines, start=1):
        if line:
            groups[-1].append(line)
        else:
            groups.append([])
            starts.append(number + 1)
    if not groups[-1]:
        groups.pop()
        starts.pop()
    for group, start in zip(groups, starts):
        if group:
            continue
        if not any(lines[start - 1 :]):
            trailing = next(i for i, line in enumerate(reversed(lines)) if line)
            raise MetricInputError(
                f"{path}: the file ends in {trailing} blank lines, which measure_scores.py reads as an "
                "empty reference group (it then fails); remove all but one"
            )
        raise MetricInputError(
            f"{path}: line {start}: empty reference group (a blank line first or two in a row)"
        )
    if len(groups) == 1:  # no separating blank line: a single-reference file
        groups = [[ref] for ref in groups[0]]
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
