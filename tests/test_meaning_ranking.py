"""Choosing sentences by meaning as well as by shared words (`Meaning`, `rag.embedding.Closeness`).

The ranking tests use the packaged embedding model; the cache tests a fake embedder that
implements the `Embedder` protocol and counts what it is asked to embed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from answering.context import (
    Meaning,
    best_sentences,
    embedded_units,
    ranked_units,
    select_context,
    whole_chunks,
)
from answering.cross_script import glossary_terms
from answering.pipeline import SENTENCE_VECTORS, TurnConfig, embed_ahead
from models.settings import Settings
from rag.documents import Chunk, Document, Hit
from rag.embedding import Closeness, Vectors

UPLOADS = Document("uploads", "Uploads", "uploads.md", "")
# Both sentences share only "file" with the question; the second one answers it.
UPLOADS_TEXT = (
    "A file is indexed as soon as its upload finishes, and its passages are searchable in that chat. "
    "Uploads are limited to 20 MB per file."
)
QUESTION = "What's the biggest file I can attach?"
HITS = [Hit(Chunk(UPLOADS, 0, UPLOADS_TEXT, ("Uploads",)), 0.5, 1)]
MEANING = Meaning(Closeness())


def test_among_sentences_sharing_the_question_s_words_the_closest_in_meaning_is_read_first():
    [by_words] = select_context(HITS, QUESTION, budget_tokens=1)
    [by_meaning] = select_context(HITS, QUESTION, budget_tokens=1, meaning=MEANING)

    assert "20 MB" not in by_words.text
    assert by_meaning.text == "Uploads are limited to 20 MB per file."


def test_the_quoted_sentence_is_chosen_by_meaning_too():
    [(quoted, number)] = best_sentences(whole_chunks(HITS), QUESTION, 1, MEANING)

    assert quoted == "Uploads are limited to 20 MB per file." and number == 1


def test_the_app_ranks_by_meaning_by_default_and_a_weight_of_zero_turns_it_off():
    default = TurnConfig.from_settings(Settings(_env_file=None))
    words_only = TurnConfig.from_settings(Settings(_env_file=None, sentence_meaning_weight=0))

    assert default.meaning is not None and default.meaning.weight == 0.5
    assert words_only.meaning is None


class RecordingCloseness:
    """Closeness that says every text is equally close, remembering what it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, question: str, texts: Sequence[str]) -> list[float]:
        self.asked.extend(texts)
        return [1.0] * len(texts)


def test_a_sentence_that_shares_no_word_with_the_question_scores_nothing_and_is_not_embedded():
    closeness = RecordingCloseness()
    texts = [["Uploads are limited to 20 MB per file.", "Cats purr."]]

    ranked = ranked_units(texts, QUESTION, ["Uploads"], Meaning(closeness))

    assert [(h, i) for score, h, i in ranked if score > 0] == [(0, 0)]
    assert closeness.asked == ["Uploads: Uploads are limited to 20 MB per file."]


class CountingEmbedder:
    """A fake `Embedder`: a text's vector is a fixed function of its length; counts the texts embedded."""

    name = "counting"
    dimensions = 4

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def passages(self, texts: Sequence[str]) -> Vectors:
        self.embedded.extend(texts)
        return np.array([self._vector(text) for text in texts], dtype=np.float32)

    def query(self, text: str) -> Vectors:
        return self._vector(text)

    @staticmethod
    def _vector(text: str) -> Vectors:
        vector = np.array([1.0, len(text) % 7, len(text) % 3, 1.0], dtype=np.float32)
        return vector / np.linalg.norm(vector)


def test_a_sentence_is_embedded_once_however_many_questions_rank_it():
    embedder = CountingEmbedder()
    closeness = Closeness(embedder)

    first = closeness("Which port?", ["Port 5273.", "Port 8000."])
    again = closeness("Which port?", ["Port 8000.", "Port 5273."])
    closeness("Which address?", ["Port 5273.", "localhost"])

    assert embedder.embedded == ["Port 5273.", "Port 8000.", "localhost"]
    assert again == first[::-1]


def test_the_least_recently_used_vectors_are_forgotten_beyond_capacity():
    embedder = CountingEmbedder()
    closeness = Closeness(embedder, capacity=2)

    closeness("q", ["a", "b"])
    closeness("q", ["a", "c"])  # "b" is now the least recently used, and goes
    closeness("q", ["a", "b"])

    assert embedder.embedded == ["a", "b", "c", "b"]


def test_sentences_embedded_ahead_are_not_embedded_again_when_a_question_ranks_them():
    embedder = CountingEmbedder()
    closeness = Closeness(embedder)

    made = closeness.embed_ahead(["Port 5273.", "Port 8000.", "Port 5273."])
    closeness("Which port?", ["Port 8000.", "Port 5273."])

    assert made == 2
    assert embedder.embedded == ["Port 5273.", "Port 8000."]


def test_what_ranking_embeds_for_a_chunk_is_what_embedding_ahead_embeds():
    closeness = RecordingCloseness()

    select_context(HITS, QUESTION, budget_tokens=50, meaning=Meaning(closeness))

    assert closeness.asked
    assert set(closeness.asked) <= set(embedded_units([hit.chunk for hit in HITS]))


def test_saved_vectors_load_into_a_new_process_cache_and_are_not_embedded_again(tmp_path: Path):
    store = tmp_path / "vectors.npz"
    first = Closeness(CountingEmbedder())
    first.embed_ahead(["Port 5273.", "Port 8000."])
    first.save(store, ["Port 5273.", "Port 8000."])
    embedder = CountingEmbedder()
    restarted = Closeness(embedder)

    loaded = restarted.load(store)
    scores = restarted("Which port?", ["Port 5273.", "Port 8000."])

    assert loaded == 2
    assert embedder.embedded == []
    assert scores == first("Which port?", ["Port 5273.", "Port 8000."])


def test_saving_keeps_what_the_file_held_for_other_texts(tmp_path: Path):
    store = tmp_path / "vectors.npz"
    handbook, clapnq = Closeness(CountingEmbedder()), Closeness(CountingEmbedder())
    handbook.embed_ahead(["Port 5273."])
    handbook.save(store, ["Port 5273."])
    clapnq.embed_ahead(["Paris is in France."])

    written = clapnq.save(store, ["Paris is in France."])

    assert written == 2 and Closeness(CountingEmbedder()).load(store) == 2


def test_vectors_of_another_embedder_are_not_loaded(tmp_path: Path):
    store = tmp_path / "vectors.npz"
    other = CountingEmbedder()
    other.name = "another model"
    saved = Closeness(other)
    saved.embed_ahead(["Port 5273."])
    saved.save(store, ["Port 5273."])

    assert Closeness(CountingEmbedder()).load(store) == 0


def test_an_unreadable_vector_file_loads_nothing_and_is_replaced_by_the_next_save(tmp_path: Path):
    store = tmp_path / "vectors.npz"
    store.write_bytes(b"PK\x03\x04 cut short")
    closeness = Closeness(CountingEmbedder())
    closeness.embed_ahead(["Port 5273."])

    assert closeness.load(store) == 0
    assert closeness.save(store, ["Port 5273."]) == 1
    assert Closeness(CountingEmbedder()).load(store) == 1


def test_the_app_embeds_a_corpus_s_sentences_ahead_into_its_model_cache_once(tmp_path: Path):
    settings = Settings(_env_file=None, model_cache_dir=tmp_path)
    chunks = [Chunk(UPLOADS, 0, f"{UPLOADS_TEXT} Each chat keeps its own files ({tmp_path.name}).", ("Uploads",))]

    first = embed_ahead(settings, chunks)
    again = embed_ahead(settings, chunks)

    # The sentences, new to the process's vectors; and the Latin words a question in another
    # script is glossed with, which other tests may have embedded already.
    assert first >= len(embedded_units(chunks)) == 3
    assert again == 0
    meaning = TurnConfig.from_settings(settings).meaning
    assert meaning is not None and isinstance(meaning.closeness, Closeness)
    assert all(vector is not None for vector in meaning.closeness.kept(glossary_terms(chunks)))
    assert (tmp_path / SENTENCE_VECTORS).is_file()


def test_nothing_is_embedded_ahead_when_ranking_by_meaning_is_off(tmp_path: Path):
    settings = Settings(_env_file=None, model_cache_dir=tmp_path, sentence_meaning_weight=0)

    assert embed_ahead(settings, [HITS[0].chunk]) == 0
    assert not (tmp_path / SENTENCE_VECTORS).exists()
