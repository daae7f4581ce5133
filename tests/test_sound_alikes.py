"""English words written in Telugu script, found again among an index's words by their sound."""

from __future__ import annotations

from rag.sound_alikes import LooseSounds, SoundAlikes, sound_key, transliterated
from rag.text import english_words, tokenize

INDEX = SoundAlikes(english_words("Python version, the upload command, the latency panel, the browser session, often"))
HANDBOOK_WORDS = "chat upload password exit code mode size whitespace waits temperature quantised".split()
LOOSE = LooseSounds([*HANDBOOK_WORDS, *tokenize(" ".join(HANDBOOK_WORDS))])


def test_a_telugu_word_is_read_in_latin_letters() -> None:
    assert transliterated("పైథాన్") == "paithan"


def test_english_spelling_and_a_transliteration_meet_in_one_key() -> None:
    assert sound_key("python") == sound_key("paithan") == "ptn"
    assert sound_key("version") == sound_key("versan")
    assert sound_key("session") == sound_key("sesan")


def test_a_loanword_finds_the_english_word_it_is_written_from() -> None:
    assert INDEX("పైథాన్") == ["python"]
    assert INDEX("బ్రౌజర్") == ["browser"]
    assert INDEX("కమాండ్") == ["command"]


def test_a_telugu_ending_after_the_loanword_still_finds_it() -> None:
    assert INDEX("ప్యానెల్‌లో".replace("\u200c", "")) == ["panel"]


def test_a_loanword_finds_the_word_the_passages_write_not_its_stem() -> None:
    # The stem of "setting" is "set", which sounds like nothing; "estimate" shares a key with it.
    settings = SoundAlikes(english_words("Change the setting, then estimate again."))

    assert settings("సెట్టింగ్") == ["setting"]


def test_a_telugu_plural_finds_an_english_plural() -> None:
    # "parameter" + the Telugu plural ending "lu", where the passage writes "parameters".
    assert SoundAlikes(english_words("The models have 135M parameters."))("పారామీటర్లు") == ["parameters"]


def test_a_telugu_c_is_the_ch_of_chat_not_the_s_of_place() -> None:
    words = SoundAlikes(english_words("Search the passages, then put them in place."))

    assert words("సెర్చ్") == ["search"]
    assert words("పోల్చే") == []  # "compare", of Telugu origin: not "place"


def test_of_two_forms_of_one_word_only_the_closer_is_found() -> None:
    assert SoundAlikes(["setting", "settings"])("సెట్టింగ్") == ["setting"]


def test_of_two_words_with_one_key_the_closer_in_sound_wins() -> None:
    assert "often" not in INDEX("పైథాన్")


def test_a_telugu_word_of_telugu_origin_finds_nothing() -> None:
    assert INDEX("గరిష్ట") == []  # "maximum"


def test_a_word_of_a_script_it_cannot_read_finds_nothing() -> None:
    assert transliterated("模型") is None
    assert INDEX("模型") == []


def test_english_spellings_telugu_writes_as_they_sound_meet_in_one_key() -> None:
    assert sound_key("temperatur") == sound_key(transliterated("టెంపరేచర్") or "")  # the stem of "temperature"
    assert sound_key("quantis") == sound_key(transliterated("క్వాంటైజ్") or "")


def test_a_borrowed_word_the_passages_hold_in_another_spelling_sounds_like_one_of_them() -> None:
    assert LOOSE("పాస్వర్డ్")  # password
    assert LOOSE("ఎగ్జిట్")  # exit: g and k are one sound here
    assert LOOSE("సైజ్")  # size


def test_a_borrowed_word_no_passage_holds_sounds_like_none_of_them() -> None:
    assert not LOOSE("వాట్సాప్")  # WhatsApp: not "waits", not "whitespace"
    assert not LOOSE("మైక్రోఫోన్")  # microphone
