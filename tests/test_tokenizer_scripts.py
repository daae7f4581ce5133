"""The tokenizer reads every script: marks that are letters stay, accents fold, CJK text is cut into pairs."""

from __future__ import annotations

import unicodedata

import pytest

from rag.chunking import chunk_documents
from rag.documents import Document
from rag.retrieval import make_retriever
from rag.text import _MARK_CODES, fold, normalise_answer, tokenize


def test_telugu_keeps_its_vowel_signs_and_viramas():
    assert tokenize("స్థానిక మోడల్స్") == ["స్థానిక", "మోడల్స్"]


def test_hindi_keeps_its_vowel_signs_and_viramas():
    assert tokenize("स्थानीय मॉडल") == ["स्थानीय", "मॉडल"]


def test_japanese_keeps_its_voicing_marks():
    assert fold("モデル") == "モデル"
    # Half-width katakana with a separate voicing mark is the same word.
    assert fold("ﾓﾃﾞﾙ") == "モデル"


def test_chinese_is_cut_into_overlapping_pairs():
    assert tokenize("本地模型的延迟") == ["本地", "地模", "模型", "型的", "的延", "延迟"]


def test_a_chinese_character_alone_stays_a_word():
    assert tokenize("猫 and dogs") == ["猫", "dog"]


def test_ideographs_beyond_the_basic_plane_are_paired_too():
    assert tokenize("𠀀𠀁𠀂 notes") == ["𠀀𠀁", "𠀁𠀂", "note"]


def test_japanese_mixed_with_latin_and_digits():
    assert tokenize("ChatGPTのモデルは2024年に") == ["chatgpt", "のモ", "モデ", "デル", "ルは", "2024", "年に"]


def test_latin_greek_and_cyrillic_accents_fold():
    assert tokenize("Café") == tokenize("cafe") == ["cafe"]
    assert fold("Ελληνικά") == "ελληνικα"
    assert fold("ёлка") == "елка"


def test_english_words_are_stemmed_and_other_scripts_are_not():
    assert tokenize("The running dogs were barking") == ["run", "dog", "bark"]
    assert tokenize("запуск проектов") == ["запуск", "проектов"]


def test_normalised_answers_keep_marks_inside_words():
    assert normalise_answer("మోడల్స్, స్థానిక!") == "మోడల్స్ స్థానిక"


def test_the_precomputed_marks_are_every_combining_mark():
    # The import skips ranges that hold no marks, to start fast; checked here once.
    every = [code for code in range(0x110000) if unicodedata.category(chr(code))[0] == "M"]
    assert every == _MARK_CODES


def test_english_with_typographic_quotes_reads_as_plain_ascii():
    assert tokenize("The “running” dogs’ bark — naïve") == tokenize('The "running" dogs\' bark - naive')


def test_what_contractions_leave_is_not_a_word():
    # "ve" is in no document: it would count against every passage of the knowledge base.
    assert tokenize("Which files I've uploaded? What's the limit you'll hit?") == ["file", "upload", "limit", "hit"]
    assert tokenize("I’ve uploaded") == ["upload"]


@pytest.mark.parametrize("mode", ["lexical", "bm25"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("స్థానిక మోడల్స్ వేగం", "te"),
        ("स्थानीय मॉडल की गति", "hi"),
        ("本地模型的延迟是多少", "zh"),
        ("ローカルモデルの速度", "ja"),
        ("запуск проекта", "ru"),
    ],
)
def test_passages_in_each_script_are_found(mode, query, expected):
    documents = [
        Document("te", "", "te.md", "స్థానిక మోడల్స్ వేగంగా సమాధానం ఇస్తాయి."),
        Document("hi", "", "hi.md", "स्थानीय मॉडल तेज़ी से उत्तर देते हैं।"),
        Document("zh", "", "zh.md", "本地模型的延迟很低，回答很快。"),
        Document("ja", "", "ja.md", "ローカルモデルの速度は速いです。"),
        Document("ru", "Отчёт", "ru.md", "Запуск проекта назначен на март."),
        Document("en", "", "en.md", "Local models answer quickly. The project launches in March."),
    ]
    hits = make_retriever(mode, chunk_documents(documents)).search(query, k=1)
    assert hits[0].chunk.document.id == expected
