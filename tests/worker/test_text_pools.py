"""The ``wiki:gensim`` text source: gensim's bundled English Wikipedia shard, one text per
sentence, parsed once and cached on disk (here in a temporary folder)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from archsearch.spaces._selection_checks import SOURCE_FORMS, WIKI_GENSIM, source_names
from archsearch.worker import _text_pools
from archsearch.worker._text_pools import gensim_wiki_texts, load_texts

needs_gensim = pytest.mark.skipif(
    importlib.util.find_spec("gensim") is None, reason="needs the wiki extra (gensim)"
)


@pytest.fixture(scope="module")
def wiki_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder for the module, named by the environment as a worker would."""
    folder = tmp_path_factory.mktemp("dsir")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHSEARCH_DSIR_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def wiki_texts(wiki_cache: Path) -> list[str]:
    """The shard's texts, parsed once for the module (a few seconds)."""
    return load_texts(WIKI_GENSIM)


def test_the_name_is_a_source() -> None:
    assert source_names("wiki:gensim") == ["wiki:gensim"]
    assert source_names(["glue:cola", "wiki:gensim"]) == ["glue:cola", "wiki:gensim"]
    assert "wiki:gensim" in SOURCE_FORMS
    with pytest.raises(ValueError, match="wiki:gensim"):
        source_names("wiki:other")  # the message lists the forms


@needs_gensim
def test_the_shard_gives_many_plain_sentences(wiki_texts: list[str]) -> None:
    assert len(wiki_texts) > 20_000
    assert wiki_texts[0].startswith("Anarchism is a political philosophy")
    for text in wiki_texts:
        assert isinstance(text, str)
        assert text == text.strip() and "\n" not in text
        assert sum(any(c.isalpha() for c in w) for w in text.split()) >= 5
        for markup in ("[[", "]]", "{{", "}}", "<ref", "'''", "|", "=="):
            assert markup not in text, (markup, text)
    # the shard's order: its first articles' openings in turn
    openings = ("Anarchism is", "Autism is", "Albedo", "Alabama is")
    firsts = [next(i for i, t in enumerate(wiki_texts) if t.startswith(o)) for o in openings]
    assert firsts == sorted(firsts)


@needs_gensim
def test_a_second_load_reads_the_cache(
    wiki_texts: list[str], wiki_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [cached] = wiki_cache.glob("wiki-gensim-*.json")
    assert json.loads(cached.read_text(encoding="utf-8")) == wiki_texts

    def no_parse(shard: Path) -> Iterator[str]:
        raise AssertionError("parsed again")

    monkeypatch.setattr(_text_pools, "_parse_wiki_shard", no_parse)
    assert load_texts(WIKI_GENSIM) == wiki_texts
    assert gensim_wiki_texts(wiki_cache) == wiki_texts


@needs_gensim
def test_the_markup_goes_and_sentences_split() -> None:
    from gensim.corpora.wikicorpus import filter_wiki

    raw = "\n".join(
        [
            "{{Infobox letter|name=Alpha}}'''Alpha''' is a [[letter]] of the [[Greek alphabet|Greek"
            " alphabet]].<ref>A source.</ref> It was used by Dr. J. Smith in c. 1200 to write"
            " ''words''.",
            "== History ==",
            "* A list item with five words here",
            "Too short here.",
            "Leftover | table cell with many words",
            "File:Alpha.jpg|A caption of the gallery picture",
            "== References ==",
            "Smith, John (2001). A Book About The Letter Alpha. Publisher.",
        ]
    )
    assert list(_text_pools._article_texts(filter_wiki(raw))) == [
        "Alpha is a letter of the Greek alphabet.",
        "It was used by Dr. J. Smith in c. 1200 to write words.",
        "A list item with five words here",
        "A caption of the gallery picture",
    ]


def test_without_gensim_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    find_spec = importlib.util.find_spec

    def no_gensim(name: str, package: str | None = None) -> object:
        return None if name == "gensim" else find_spec(name, package)

    monkeypatch.setattr(_text_pools.importlib.util, "find_spec", no_gensim)
    assert source_names(["wiki:gensim"]) == ["wiki:gensim"]
    with pytest.raises(ValueError, match=r"pip install 'archsearch\[wiki\]'"):
        load_texts(WIKI_GENSIM)
    with pytest.raises(ValueError, match=r"pip install 'archsearch\[wiki\]'"):
        gensim_wiki_texts(tmp_path)


def test_a_text_file_that_is_not_utf8_is_said_with_its_place_and_fix(tmp_path: Path) -> None:
    """A binary DSIR target failed its trials with Python's bare "'utf-8' codec can't
    decode byte 0xae in position 3"."""
    path = tmp_path / "target.txt"
    path.write_bytes(b"fine\nab\xae\n")
    with pytest.raises(ValueError, match=r"target.txt:2: not UTF-8 text .*save the file as UTF-8"):
        load_texts(f"file:{path}")
