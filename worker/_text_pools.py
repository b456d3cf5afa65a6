"""Named text sources for data selection: GLUE text, text files and JSONL files.

A ``data.selection`` (or ``data.pretrain_selection``) names its pool and target as source
names (one string or a list):

* ``"train"``, ``"dev"``, ``"test"`` (or another dev split name): the candidate's own task's
  split, read by the trainer's data source;
* ``"glue:TASK"`` or ``"glue:TASK/SPLIT"`` (SPLIT ``train`` by default; ``test`` splits are
  unlabelled and read for their text only): another GLUE task's text from the ``glue_data``
  folder;
* ``"file:PATH"``, or a path ending in ``.txt`` or ``.jsonl``: a text file (one text per line,
  blank lines skipped) or a JSONL file (one object per line with a ``"text"`` field);
* ``"wiki:gensim"``: the English Wikipedia shard bundled with gensim (its test data, 106
  articles), one text per sentence (:func:`gensim_wiki_texts`); needs the ``wiki`` extra
  (``pip install 'archsearch[wiki]'``).

A sentence pair becomes one text, its sentences joined by a space. Torch-free.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from archsearch.spaces import get_task
from archsearch.spaces._selection_checks import (
    SOURCE_FORMS,
    WIKI_GENSIM,
    file_path,
    glue_source,
)
from archsearch.worker._example import not_utf8
from archsearch.worker._glue_dir import load_split, resolve_glue_dir


def load_texts(name: str, glue_dir: str | Path | None = None) -> list[str]:
    """The texts of a ``glue:``, file or ``wiki:gensim`` source (own-split names are read by
    the trainer).

    Raises:
        FileNotFoundError: The file, GLUE split or wiki shard is missing (the path is named).
        ValueError: An unknown form, a JSONL line without a ``text`` string, no text, or
            ``wiki:gensim`` without gensim installed (the message names the extra).
    """
    if name == WIKI_GENSIM:
        texts = gensim_wiki_texts()
    elif name.startswith("glue:"):
        task_id, split = glue_source(name)
        folder = resolve_glue_dir(None if glue_dir is None else str(glue_dir))[0]
        texts = glue_texts(task_id, split, folder)
    elif (path := file_path(name)) is not None:
        texts = file_texts(path)
    else:
        raise ValueError(f"unknown source {name!r}; a source is {SOURCE_FORMS}")
    if not texts:
        raise ValueError(f"source {name!r} holds no text")
    return texts


def glue_texts(task_id: str, split: str, glue_dir: str | Path) -> list[str]:
    """The texts of a GLUE split (labelled, or a ``test`` split read by its header: MNLI's
    is its two files, ``test_matched.tsv`` and ``test_mismatched.tsv``, like its dev split)."""
    if split != "test":
        return [" ".join(e.texts) for e in load_split(task_id, split, glue_dir)]
    task = get_task(task_id)
    folder = Path(glue_dir) / task.folder
    files = [name.replace("dev", "test", 1) for name in task.dev_files]
    return [t for name in files for t in _test_texts(task_id, str((folder / name).resolve()))]


def file_texts(path: str | Path) -> list[str]:
    """The texts of a ``.jsonl`` file (``"text"`` fields) or any other text file (lines);
    ``~`` is the worker's home, as in a custom task's files."""
    try:
        path = Path(path).expanduser()
    except RuntimeError:  # ~user: no such user on this worker
        raise FileNotFoundError(f"text source {path}: its home is unknown on this worker") from None
    if not path.is_file():
        raise FileNotFoundError(f"text source {path} does not exist on this worker")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(not_utf8(path)) from None
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line).get("text")
        except (json.JSONDecodeError, AttributeError):
            text = None
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number}: not a JSON object with a 'text' string")
        texts.append(text)
    return texts


#: The shard inside the gensim package (the first ~100 articles of a 2017 English dump).
WIKI_SHARD = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_WIKI_MIN_WORDS = 5
# Bump when the parsed texts change in a way the shard's size and mtime do not capture.
_WIKI_FORMAT = 1
# Sections of reference lists, links and bibliographies rather than prose.
_WIKI_SKIPPED_SECTIONS = frozenset({
    "references", "external links", "see also", "further reading", "notes", "bibliography",
    "sources", "citations", "footnotes", "notes and references", "works cited", "gallery",
})  # fmt: skip
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]?\s+(?=[\"'(]?[A-Z0-9])")
# A piece ending in one of these did not end a sentence (an initial, "Dr.", "e.g.", "c. 1200").
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Mt|vs|etc|e\.g|i\.e|c|ca|cf|no|No|approx|Gen|Col|Lt"
    r"|Sgt|Capt|Rev|Gov|Sen|Rep|Inc|Ltd|Co|Corp|U\.S|U\.K|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept"
    r"|Oct|Nov|Dec|Vol|vol|pp|p|ed|eds|trans|fl|b|d)|\b[A-Z])[.\"')]*$"
)
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;]?\s*\)")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:])")
_LEFTOVER_MARKUP = re.compile(r"[|{}<>\[\]]")


def wiki_shard() -> Path:
    """The Wikipedia shard inside the installed gensim package, found without importing it.

    Raises:
        ValueError: gensim is not installed (the message names the fix).
        FileNotFoundError: gensim is installed without its test data (the path is named).
    """
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"source {WIKI_GENSIM!r} needs gensim: pip install 'archsearch[wiki]'")
    path = Path(next(iter(spec.submodule_search_locations))) / WIKI_SHARD
    if not path.is_file():
        raise FileNotFoundError(f"gensim's Wikipedia shard not found: looked for {path}")
    return path


def gensim_wiki_texts(cache_dir: str | Path | None = None) -> list[str]:
    """The sentences of gensim's bundled English Wikipedia shard (``"wiki:gensim"``).

    The shard (106 articles, about 480,000 words) is parsed with gensim's own wiki tools:
    ``extract_pages`` reads the main-namespace pages, redirects are skipped, and
    ``filter_wiki`` strips the markup. Headings, bold and italic quotes and list markers go;
    sections of references, links and bibliographies are skipped; gallery lines keep their
    caption. Each remaining line is split into sentences (at ``.``, ``!`` or ``?`` before a
    capital or digit, not after an initial or a common abbreviation), and a text is a
    sentence of at least 5 words with a letter (21,033 texts of 21 words on average,
    in the shard's order), the granularity of the GLUE texts. Lines of leftover markup
    (``|``, brackets, braces, tags) are dropped.

    Parsed once per shard (about 4 s with gensim's import) and kept as JSON in ``cache_dir``
    (default :func:`~archsearch.worker._dsir_cache.dsir_root`), keyed by the shard's path,
    size and mtime and gensim's version, so later loads read the file (well under a second).

    Raises:
        ValueError: gensim is not installed (the message names the fix).
        FileNotFoundError: gensim lacks the shard.
    """
    shard = wiki_shard()
    if cache_dir is None:
        from archsearch.worker._dsir_cache import dsir_root  # numpy; only for this source

        cache_dir = dsir_root()
    stat = shard.stat()
    try:
        version = importlib.metadata.version("gensim")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    key = json.dumps([_WIKI_FORMAT, str(shard), stat.st_size, stat.st_mtime_ns, version])
    cached = Path(cache_dir) / f"wiki-gensim-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        found = json.loads(cached.read_text(encoding="utf-8"))
        if isinstance(found, list) and all(isinstance(t, str) for t in found):
            return found
    except (OSError, ValueError):
        pass
    texts = list(_parse_wiki_shard(shard))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, cached)
    except OSError:
        pass  # a read-only cache: parse again next time
    return texts


def _parse_wiki_shard(shard: Path) -> Iterator[str]:
    import bz2

    try:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    except ImportError as e:
        raise ValueError(
            f"source {WIKI_GENSIM!r}: gensim does not import ({e}); pip install 'archsearch[wiki]'"
        ) from e
    with bz2.open(shard) as f:
        for _title, text, _page_id in extract_pages(f, filter_namespaces=("0",)):
            if text and not text.lstrip().lower().startswith("#redirect"):
                yield from _article_texts(filter_wiki(text))


def _article_texts(plain: str) -> Iterator[str]:
    skipped = False
    for raw in plain.splitlines():
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            skipped = heading.group(2).strip().lower() in _WIKI_SKIPPED_SECTIONS
            continue
        if skipped or not line:
            continue
        if line.startswith(("File:", "Image:")):
            line = line.rpartition("|")[2]  # a gallery line: its caption
        line = line.lstrip("*#:;| ").replace("'''", "").replace("''", "")
        line = _EMPTY_BRACKETS.sub("", " ".join(line.split()))
        line = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(line.split()))
        for sentence in _sentences(line):
            words = sum(any(c.isalpha() for c in w) for w in sentence.split())
            if words >= _WIKI_MIN_WORDS and not _LEFTOVER_MARKUP.search(sentence):
                yield sentence


def _sentences(line: str) -> list[str]:
    pieces, end = [], 0
    for match in _SENTENCE_END.finditer(line):
        pieces.append(line[end : match.start()] + match.group().strip())  # keeps a closing quote
        end = match.end()
    pieces.append(line[end:])
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _ABBREVIATION.search(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return sentences


@functools.lru_cache(maxsize=16)
def _test_texts(task_id: str, path: str) -> tuple[str, ...]:
    task = get_task(task_id)
    if not Path(path).is_file():
        raise FileNotFoundError(f"GLUE {task_id} test split not found: looked for {path}")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, [])
        missing = [c for c in task.text_columns if c not in header]
        if missing:
            raise ValueError(f"{path}: header {header} lacks column(s) {missing}")
        idx = [header.index(c) for c in task.text_columns]
        return tuple(" ".join(row[i] for i in idx) for row in rows if len(row) > max(idx))
