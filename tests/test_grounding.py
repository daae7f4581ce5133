"""The support check and the streaming guard, on constructed answers."""

from __future__ import annotations

from answering.grounding import (
    AnswerGuard,
    Evidence,
    GuardMode,
    check_sentence,
    exact_terms,
    guard_text,
    is_repetitive,
    split_sentences,
)

PASSAGES = Evidence.of(
    [
        "Foundry Local › Connecting\nSet `FOUNDRY_LOCAL_ENDPOINT` to the URL that `foundry service status` prints; "
        "the service usually listens on port 5273.",
        "Sessions › Timeouts\nA closed tab's session stays in memory for 120 seconds (SESSION_TIMEOUT_S), "
        "then its uploads are deleted.",
        "Конфигурация\nМодель по умолчанию отвечает на порту 5273.",
        "日本語\nローカルモデルは応答を速く返します。",
    ]
)


def test_a_sentence_built_from_the_passages_is_supported():
    verdict = check_sentence("Foundry Local usually listens on port 5273 [1].", PASSAGES)
    assert verdict.supported


def test_a_number_the_passages_never_state_is_not_supported():
    verdict = check_sentence("Foundry Local usually listens on port 8001 [1].", PASSAGES)
    assert not verdict.supported and verdict.missing == ("8001",)
    assert "8001" in verdict.reason


def test_an_invented_command_is_not_supported():
    verdict = check_sentence("Run `sudo nano /etc/fusedb/conf/environment.yml` and set the endpoint.", PASSAGES)
    assert not verdict.supported
    assert "`sudo nano /etc/fusedb/conf/environment.yml`" in verdict.missing


def test_a_setting_name_from_the_passages_is_supported_in_any_case():
    assert check_sentence("Set foundry_local_endpoint to the URL [1].", PASSAGES).supported


def test_an_invented_setting_name_is_not_supported():
    assert not check_sentence("Set FOUNDRY_PORT to 5273.", PASSAGES).supported


def test_a_sentence_of_mostly_other_words_is_not_supported():
    verdict = check_sentence("Germany won the football world cup after a dramatic final.", PASSAGES)
    assert not verdict.supported and verdict.content_share < 0.5


def test_an_abstention_claims_nothing_and_is_supported():
    assert check_sentence("The documents do not cover who won the 2018 world cup.", PASSAGES).supported


def test_a_code_line_is_supported_only_when_the_passages_have_it():
    assert check_sentence("foundry service status", PASSAGES, code=True).supported
    assert not check_sentence("sudo systemctl restart foundry", PASSAGES, code=True).supported


def test_sentences_in_other_scripts_are_checked_by_their_words():
    assert check_sentence("Модель по умолчанию отвечает на порту 5273.", PASSAGES).supported
    assert not check_sentence("Модель по умолчанию отвечает на порту 8080.", PASSAGES).supported
    assert check_sentence("ローカルモデルは応答を速く返します。", PASSAGES).supported
    assert not check_sentence("クラウドサーバーは料金が高いです。", PASSAGES).supported


def test_exact_terms_skip_list_markers_and_citations():
    assert exact_terms("1. Set `TOP_K` to 3 [2].") == ["`TOP_K`", "3"]


def test_splitting_keeps_every_character_and_marks_code_lines():
    answer = "Set it [1]. Then run:\n```bash\nfoundry service status\n```\nDone."
    sentences = split_sentences(answer)
    assert "".join(s.text for s in sentences) == answer
    assert [s.text.strip() for s in sentences if s.code] == ["foundry service status"]


def test_a_decimal_number_is_not_cut_in_two_while_it_streams():
    guard = AnswerGuard(Evidence.of(["The threshold is 0.35 by default."]))
    for piece in ["The threshold is 0", ".", "35 by default."]:
        assert guard.feed(piece) == []
    assert guard.finish() == [] and guard.result.kept == "The threshold is 0.35 by default."


def test_the_guard_in_stop_mode_cuts_the_first_unsupported_sentence_and_stops():
    guard = AnswerGuard(PASSAGES, GuardMode.STOP)
    cuts = guard.feed("Foundry Local listens on port 5273 [1]. It also listens on port 8001. And more.")
    assert [cut.text.strip() for cut in cuts] == ["It also listens on port 8001."]
    assert guard.stopped
    assert guard.result.kept == "Foundry Local listens on port 5273 [1]."


def test_the_guard_in_mark_mode_marks_and_goes_on():
    result = guard_text(
        "It listens on port 8001. A closed tab's session stays in memory for 120 seconds.", PASSAGES, GuardMode.MARK
    )
    assert [cut.text.strip() for cut in result.cuts] == ["It listens on port 8001."]
    assert result.kept == "A closed tab's session stays in memory for 120 seconds."


def test_the_guard_off_keeps_everything():
    result = guard_text("It listens on port 8001.", PASSAGES, GuardMode.OFF)
    assert result.cuts == [] and result.kept == "It listens on port 8001."


def test_a_loop_is_cut_and_stops_the_answer_even_in_mark_mode():
    sentence = "A closed tab's session stays in memory for 120 seconds. "
    guard = AnswerGuard(PASSAGES, GuardMode.MARK)
    cuts = guard.feed(sentence * 3)
    assert len(cuts) == 1 and cuts[0].loop and guard.stopped
    assert guard.result.kept == sentence.strip()


def test_a_long_answer_that_repeats_a_run_of_words_is_repetitive():
    looping = "Set the endpoint in the settings file and restart the app. " * 2
    assert is_repetitive(looping)
    assert not is_repetitive("Set the endpoint in the settings file, then restart the app to apply it.")
