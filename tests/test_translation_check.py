"""The support check for a Telugu answer to English passages (issue 28)."""

from __future__ import annotations

from answering.grounding import Evidence, GuardMode, split_sentences
from answering.translation_check import (
    TranslationGuard,
    ascii_digits,
    check_translated_sentence,
    check_translation,
)

PASSAGES = Evidence.of(
    [
        "Uploads › Limits\nAn upload may be at most 20 MB; set `UPLOAD_MAX_MB` to change it.",
        "Foundry Local › Connecting\nFoundry Local usually listens on port 5273 and serves SmolLM2.",
        "Sessions › Timeouts\nA closed tab's session stays in memory for 25 seconds.",
    ]
)


def test_a_telugu_answer_restating_the_number_and_the_setting_is_kept():
    result = check_translation("అప్‌లోడ్ గరిష్ఠంగా 20 MB ఉండవచ్చు; దాన్ని `UPLOAD_MAX_MB` తో మార్చవచ్చు [1].", PASSAGES)
    assert not result.cuts
    assert (result.checked, result.verified, result.unchecked) == (1, 1, 0)


def test_a_changed_number_is_cut():
    # The passages say 25, but of seconds: 25 MB is not stated.
    result = check_translation("అప్‌లోడ్ గరిష్ఠంగా 25 MB ఉండవచ్చు [1]. పోర్ట్ 5273 [2].", PASSAGES)
    assert [cut.reason for cut in result.cuts] == ["the passages never state 25 MB"]
    assert result.kept == "పోర్ట్ 5273 [2]."


def test_a_latin_name_the_passages_never_mention_is_cut():
    verdict = check_translated_sentence("ఇది Ollama లో నడుస్తుంది.", PASSAGES)
    assert verdict.missing == ("Ollama",)


def test_latin_names_the_passages_mention_stand():
    verdict = check_translated_sentence("Foundry Local సాధారణంగా SmolLM2ను అందిస్తుంది.", PASSAGES)
    assert verdict.supported and verdict.items == ("SmolLM2", "Foundry Local")


def test_telugu_digits_are_read_as_ascii_digits():
    assert ascii_digits("౨౦ MB") == "20 MB"
    assert check_translated_sentence("పోర్ట్ ౫౨౭౩.", PASSAGES).supported
    assert not check_translated_sentence("పోర్ట్ ౫౨౭౪.", PASSAGES).supported


def test_numbers_are_compared_as_numbers():
    assert check_translated_sentence("పరిమితి 20.0MB.", PASSAGES).supported


def test_a_sentence_with_nothing_checkable_is_kept_and_counted_unchecked():
    result = check_translation("ఇది చాలా సులభం. పోర్ట్ 5273.", PASSAGES)
    assert not result.cuts and result.kept == "ఇది చాలా సులభం. పోర్ట్ 5273."
    assert (result.checked, result.unchecked, result.kept_sentences) == (1, 1, 2)


def test_a_citation_is_not_a_number():
    verdict = check_translated_sentence("ఇది చాలా సులభం [3].", PASSAGES)
    assert not verdict.checked and verdict.supported


def test_telugu_sentences_end_at_a_danda():
    # grounding's splitter does not end a sentence at "।"; the translation guard does.
    answer = "పరిమితి 25 MB। పోర్ట్ 5273।"
    assert len(split_sentences(answer)) == 1
    result = check_translation(answer, PASSAGES)
    assert result.kept == "పోర్ట్ 5273।" and len(result.cuts) == 1


def test_streaming_in_pieces_gives_the_same_result_as_the_whole_text():
    answer = "అప్‌లోడ్ 20 MB [1]। ఇది Ollama లో నడుస్తుంది! పోర్ట్ ౫౨౭౩? ఇది సులభం."
    guard = TranslationGuard(PASSAGES, GuardMode.MARK)
    for character in answer:
        guard.feed(character)
    guard.finish()
    assert guard.result == check_translation(answer, PASSAGES)
    assert [cut.text for cut in guard.result.cuts] == ["ఇది Ollama లో నడుస్తుంది! "]


def test_in_stop_mode_the_first_cut_stops_the_model():
    guard = TranslationGuard(PASSAGES, GuardMode.STOP)
    guard.feed("పరిమితి 25 MB. పోర్ట్ 5273. ")
    assert guard.stopped and guard.result.kept == ""
