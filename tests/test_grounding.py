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
    lacks_asked_number,
    names,
    opens_with_abstention,
    restates_question,
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


UPLOADS = [
    "Uploading › Listing and removing\nSend `/uploads` to list this chat's files with their titles. "
    "Send `/remove <file name>` to take an upload out of the chat.",
    "Retrieval › Indexing\nEach chunk is indexed with its document's title counted three times.",
    "Models › Gemma\nThe Gemma 3 270M model from these packages is the pretrained one, not the instruction-tuned one.",
    "Models › Choosing\n`SLM_MODEL` is the small model that answers first. "
    "`LLM_MODEL` is the large model that unsure questions go to.",
]


def test_a_number_is_the_same_number_however_it_is_written():
    evidence = Evidence.of(["| `CONNECT_TIMEOUT_S` | `3.0` | Seconds to open a connection. |", "About 1,000 asked."])
    assert check_sentence("It waits 3 seconds to open a connection.", evidence).supported
    assert check_sentence("About 1000 asked.", evidence).supported
    assert not check_sentence("It waits 30 seconds to open a connection.", evidence).supported


def test_a_count_written_as_a_word_must_be_stated():
    assert check_sentence("The title is counted three times.", Evidence.of(UPLOADS)).supported
    verdict = check_sentence("The document's title is counted twice when indexed.", Evidence.of(UPLOADS))
    assert not verdict.supported and verdict.missing == ("twice",)


def test_a_real_command_with_words_from_another_sentence_is_not_supported():
    evidence = Evidence.of(UPLOADS)
    assert check_sentence("Use `/uploads` to list the files of this chat.", evidence).supported
    verdict = check_sentence("Send `/uploads` to take an upload out of the chat.", evidence)
    assert not verdict.supported and "`/uploads`" in verdict.reason


def test_a_bare_term_answers_only_what_its_passage_sentence_is_about():
    evidence = Evidence.of(UPLOADS, "Which model answers first?")
    assert check_sentence("`SLM_MODEL`", evidence).supported
    assert not check_sentence("`LLM_MODEL`", evidence).supported


MODEL_SPEEDS = [
    "[1] Models › SmolLM2-135M\nIt decodes about 86 tokens per second on 2 CPU cores.",
    "[2] Models › Gemma 3 270M\nIt decodes about 45 tokens per second on 2 CPU cores.",
]


def test_a_figure_is_supported_only_from_a_passage_about_what_the_question_names():
    evidence = Evidence.of(MODEL_SPEEDS, "How many tokens per second does Gemma decode?")
    assert check_sentence("Gemma decodes about 45 tokens per second.", evidence).supported
    verdict = check_sentence("Gemma decodes about 86 tokens per second.", evidence)
    assert not verdict.supported and "86" in verdict.reason


def test_an_english_question_names_its_capitalised_words_and_a_german_one_nothing():
    assert names("Is there a Slack bot for the Knowledge Assistant?") == ["Slack", "Knowledge", "Assistant"]
    assert names("Wie lange bleibt eine Sitzung im Speicher?") == []


def test_a_passage_heading_names_what_its_sentences_are_about():
    evidence = Evidence.of(MODEL_SPEEDS, "How fast does SmolLM2 decode?")
    assert check_sentence("About 86 tokens per second.", evidence).supported
    assert not check_sentence("About 45 tokens per second.", evidence).supported


def test_a_bare_term_taken_from_the_question_answers_nothing():
    evidence = Evidence.of(MODEL_SPEEDS, "How fast does SmolLM2-135M decode?")
    verdict = check_sentence("135M.", evidence)
    assert not verdict.supported and "repeats" in verdict.reason
    assert check_sentence("86.", evidence).supported


def test_a_bare_yes_must_agree_with_the_passage_that_answers_the_question():
    evidence = Evidence.of(UPLOADS, "Is the Gemma 3 270M model the instruction-tuned one?")
    assert check_sentence("No, it is not.", evidence).supported
    assert not check_sentence("Yes, it is.", evidence).supported


def test_a_passage_that_does_it_without_something_answers_no():
    evidence = Evidence.of(
        ["[1] Retrieval › Editing the handbook\nAn edited file is re-indexed within a few seconds, without a restart."],
        "Do I need to restart the app after editing a handbook file?",
    )
    assert check_sentence("No.", evidence).supported
    assert not check_sentence("Yes.", evidence).supported


def test_a_yes_that_repeats_the_question_must_still_agree_with_the_passage():
    evidence = Evidence.of(UPLOADS, "Is the Gemma 3 270M model the instruction-tuned one?")
    assert not check_sentence("Yes, the Gemma 3 270M model is the instruction-tuned one.", evidence).supported
    assert check_sentence("No, the Gemma 3 270M model is not the instruction-tuned one.", evidence).supported


def test_a_yes_or_no_before_the_questions_words_is_an_answer_not_a_restatement():
    assert not restates_question("Yes, the app reloads by itself.", "Does the app reload by itself?")
    assert restates_question("The app reloads by itself.", "Does the app reload by itself?")


def test_a_question_for_a_number_is_not_answered_without_one():
    question = "How many characters of the previous chunk are repeated?"
    assert lacks_asked_number("Up to `CHUNK_OVERLAP` characters of the previous one.", question)
    assert not lacks_asked_number("150 characters.", question)
    assert not lacks_asked_number("Three hundred.", question)
    assert not lacks_asked_number("The setting is `CHUNK_OVERLAP`.", "Which setting repeats characters?")


def test_an_answer_abstains_only_when_it_starts_by_saying_so():
    assert opens_with_abstention("The documents do not cover this. They cover ports.")
    assert not opens_with_abstention("Port 5273. This is not stated in the passages.")


def test_a_code_line_copied_across_an_excerpt_gap_is_supported():
    evidence = Evidence.of(["Run make run … then open http://localhost:8000 in a browser."])
    assert check_sentence("make run … then open http://localhost:8000", evidence, code=True).supported


def test_exact_terms_skip_list_markers_and_citations():
    assert exact_terms("1. Set `TOP_K` to 3 [2].") == ["`TOP_K`", "3"]


def test_a_telugu_question_asking_how_many_wants_a_number_and_a_list_number_is_none():
    question = "ఒక సందేశానికి ఎన్ని ఫైళ్లు జత చేయవచ్చు?"  # "How many files can one message have?"
    assert lacks_asked_number("6. చిన్న మోడల్ జవాబు అనుమానంగా ఉంటే పెద్ద మోడల్ జవాబిస్తుంది. [1]", question)
    assert not lacks_asked_number("అప్రమేయంగా 10 ఫైళ్లు. [1]", question)
    assert not lacks_asked_number("రెండు ఫైళ్లు. [1]", question)  # "two files"
    assert not lacks_asked_number("6. చిన్న మోడల్", "టెర్మినల్‌లో యాప్‌ను ఎలా ఆపాలి?")  # "How do I stop the app?"


def test_a_list_item_is_one_sentence_with_its_number():
    answer = "Two steps:\n1. Open http://localhost:8000 in a browser.\n2. Ask."
    assert [s.text for s in split_sentences(answer)] == [
        "Two steps:\n",
        "1. Open http://localhost:8000 in a browser.\n",
        "2. Ask.",
    ]


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


GENERATION_TABLE = [
    "[1] Configuration › Generation\n| Variable | Default | Meaning |\n|---|---|---|\n"
    "| `TEMPERATURE` | `0.0` | Sampling temperature; higher varies the wording. Allowed: 0.0 to 2.0. |\n"
    "| `MAX_TOKENS` | `512` | Longest answer, in tokens. Allowed: 1 to 8192. |"
]


def test_a_value_from_a_table_belongs_to_its_column():
    evidence = Evidence.of(GENERATION_TABLE, "What is the default sampling temperature?")
    assert check_sentence("The default sampling temperature is 0.0 [1].", evidence).supported
    assert check_sentence("The sampling temperature is allowed from 0.0 to 2.0 [1].", evidence).supported
    verdict = check_sentence("The temperature is 2.0 (default) [1].", evidence)
    assert not verdict.supported and verdict.reason == "the passages give 2 as the Meaning, not the Default"


def test_a_value_from_a_table_belongs_to_its_row():
    evidence = Evidence.of(GENERATION_TABLE, "What is the default sampling temperature?")
    verdict = check_sentence("The default is 512.", evidence)
    assert not verdict.supported and "512" in verdict.reason


ESCALATION_AND_HISTORY = [
    "[1] Escalation › Choosing the escalation mode\nA new chat starts with the mode from `ROUTER_MODE`; "
    "`ROUTER_MODE=off` in `.env` turns escalation off for every new chat.",
    "[2] Chat history and login › Keeping nothing\n`PERSIST_CHATS=false` keeps no chat once it ends.",
]


def test_a_setting_from_a_passage_about_something_else_is_not_the_answer():
    evidence = Evidence.of(ESCALATION_AND_HISTORY, "How do I turn off saving chats?")
    assert check_sentence("Set `PERSIST_CHATS=false` to keep no chat once it ends [2].", evidence).supported
    verdict = check_sentence("To turn off saving chats, set `ROUTER_MODE=off` for every new chat.", evidence)
    assert (
        not verdict.supported and verdict.reason == "the passage that gives `ROUTER_MODE=off` is about something else"
    )
