"""The MS-COCO caption metrics as e2e-metrics runs them: PTB tokenizer, METEOR 1.5, ROUGE-L, CIDEr.

Mirrors `pycocoevalcap` (`COCOEvalCap.evaluate`) as bundled with e2e-metrics: references and
outputs are tokenised separately by Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines
-lowerCase`, the punctuation tokens in `PUNCTUATIONS` are dropped, then METEOR 1.5 (`-l en -norm`,
the `-stdio` protocol), ROUGE-L (beta 1.2) and CIDEr (pycocoevalcap's `Cider`, which is the CIDEr-D
variant: sigma 6 length penalty, clipped counts, x10, document frequencies from the evaluated
references) are computed. ROUGE-L and CIDEr come from pycocoevalcap's own Python code; the Java
jars (tokenizer and METEOR) are the ones pycocoevalcap ships, run here by our own subprocess code
so that a missing Java is reported instead of crashing.

Deviations from pycocoevalcap, none of which changes a score it computes correctly: sentences
reach the tokenizer through stdin instead of a temporary file inside site-packages; stderr is
captured instead of piped unread (which can dead-lock); line breaks other than "\\n" inside a
sentence (\\r, \\v, \\f, U+2028, U+2029) become spaces like "\\n" does (pycocoevalcap would shift
every later sentence onto the wrong source); the JVM runs with -Dfile.encoding=UTF-8 so that the
result does not depend on the machine's locale (a UTF-8 locale gives the same without it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

# pycocoevalcap replaces only "\n"; the tokenizer also breaks lines at these, which would shift
# every later sentence onto the wrong source, so they become spaces too.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\u2028\u2029]")
JAVA_INSTALL_HINT = "apt-get install -y default-jre-headless"
METEOR_VERSION = "METEOR 1.5 (pycocoevalcap meteor-1.5.jar, -l en -norm)"
PTB_VERSION = "Stanford CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase (pycocoevalcap)"


class JavaUnavailable(RuntimeError):
    """Java (or a jar) is missing or failed; the message says why and how to install Java."""


def _package_dir() -> Path:
    try:
        from pycocoevalcap.tokenizer import ptbtokenizer  # a namespace package: no __init__ to locate
    except ImportError:
        raise JavaUnavailable("pycocoevalcap is not installed (pip install pycocoevalcap==1.2)") from None
    return Path(ptbtokenizer.__file__).resolve().parent.parent


def meteor_jar() -> Path:
    """Path of pycocoevalcap's meteor-1.5.jar (its paraphrase table lies beside it in data/)."""
    return _package_dir() / "meteor" / "meteor-1.5.jar"


def _ptb_jar() -> Path:
    return _package_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"


def java_command() -> str:
    """Returns the `java` executable or raises JavaUnavailable with the install command."""
    java = shutil.which("java")
    if java is None:
        raise JavaUnavailable(
            f"java not found on PATH (needed for the jars); install it: {JAVA_INSTALL_HINT}"
        )
    return java


def _check_jar(path: Path) -> Path:
    if not path.is_file():
        raise JavaUnavailable(f"{path} is missing; reinstall pycocoevalcap (pip install pycocoevalcap==1.2)")
    return path


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """PTB-tokenises and lower-cases sentences and drops punctuation tokens, as pycocoevalcap does.

    Args:
        sentences: one sentence each; embedded line breaks become spaces (pycocoevalcap does this
            for "\\n" only).

    Returns:
        One tokenised string per input sentence.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    if not sentences:
        return []
    cmd = [
        java_command(),
        "-Dfile.encoding=UTF-8",
        "-cp",
        str(_check_jar(_ptb_jar())),
        "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines",
        "-lowerCase",
    ]
    text = "\n".join(_LINE_BREAKS.sub(" ", s) for s in sentences)
    try:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    except OSError as exc:
        raise JavaUnavailable(f"could not run java ({exc}); install it: {JAVA_INSTALL_HINT}") from None
    if proc.returncode != 0:
        raise JavaUnavailable(f"PTB tokenizer failed (exit {proc.returncode}): {_last_line(proc.stderr)}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) != len(sentences):
        raise JavaUnavailable(f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    return [
        " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
        for line in lines[: len(sentences)]
    ]


def _last_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


class Meteor:
    """A running METEOR 1.5 process (`-stdio -l en -norm`), scoring with pycocoevalcap's protocol.

    Start-up loads the paraphrase table (a few seconds), so reuse one instance; it is also a
    context manager. Thread-safe.
    """

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        jar = _check_jar(meteor_jar())
        cmd = [
            java_command(),
            "-Dfile.encoding=UTF-8",
            "-Xmx2G",
            "-jar",
            str(jar),
            "-",
            "-",
            "-stdio",
            "-l",
            "en",
            "-norm",
            *extra_args,
        ]
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
            )
        except OSError as exc:
            raise JavaUnavailable(f"could not run java ({exc}); install it: {JAVA_INSTALL_HINT}") from None
        self._lock = threading.Lock()

    def _ask(self, line: str) -> None:
        try:
            self._proc.stdin.write((line + "\n").encode("utf-8"))
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise JavaUnavailable(f"METEOR process died: {self._error()}") from None

    def _answer(self) -> str:
        out = self._proc.stdout.readline()
        if not out:
            raise JavaUnavailable(f"METEOR process died: {self._error()}")
        return out.decode("utf-8").strip()

    def _error(self) -> str:
        self._proc.poll()
        self._stderr.seek(0)
        return _last_line(self._stderr.read())

    def score(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
        """Corpus METEOR and per-segment scores of `hyps` against their reference lists.

        Text is sent as pycocoevalcap sends it: '|||' removed from hypotheses and double spaces
        collapsed once; references unchanged. The corpus value is METEOR's aggregate over the
        summed statistics (not the mean of the segment scores).
        """
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
        with self._lock:
            stats = []
            for hyp, group in zip(hyps, refs):
                hyp = hyp.replace("|||", "").replace("  ", " ")
                # A line break would desynchronise the line protocol (tokenised text has none).
                line = " ||| ".join(("SCORE", " ||| ".join(group), hyp))
                self._ask(_LINE_BREAKS.sub(" ", line))
                stats.append(self._answer())
            self._ask("EVAL ||| " + " ||| ".join(stats))
            per_segment = [float(self._answer()) for _ in hyps]
            return float(self._answer()), per_segment

    def close(self) -> None:
        """Stops the Java process."""
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rouge_l(hyps_tok: Sequence[str], refs_tok: Sequence[Sequence[str]]) -> float:
    """Mean sentence ROUGE-L (beta 1.2, max over references) with pycocoevalcap's Rouge."""
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: list(r) for i, r in enumerate(refs_tok)}
    res = {i: [h] for i, h in enumerate(hyps_tok)}
    return float(Rouge().compute_score(gts, res)[0])


def cider(hyps_tok: Sequence[str], refs_tok: Sequence[Sequence[str]]) -> float:
    """pycocoevalcap's CIDEr (the CIDEr-D formula) with document frequencies from `refs_tok`."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: list(r) for i, r in enumerate(refs_tok)}
    res = {i: [h] for i, h in enumerate(hyps_tok)}
    return float(Cider().compute_score(gts, res)[0])
