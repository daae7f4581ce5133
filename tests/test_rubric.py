"""The answer rubric and the judge's reply parser: pure functions on constructed answers."""

from __future__ import annotations

import pytest

from evaluation.rubric import (
    conciseness,
    correctness,
    groundedness,
    is_repetitive,
    judge_messages,
    parse_judge_reply,
    score,
    support_share,
)

PASSAGES = [
    (
        "The Quorrin bridge › History\nThe Quorrin bridge crosses the river Ammel. It was opened in 1911 "
        "by the engineer Helga Strand and is 312 metres long."
    )
]
GOLD = ["Helga Strand opened the Quorrin bridge in 1911."]
UNANSWERABLE: list[str] = []


def test_a_grounded_correct_concise_answer_scores_five_on_everything():
    detail = score("The engineer Helga Strand opened the Quorrin bridge in 1911 [1].", PASSAGES, GOLD)

    assert detail.scores.as_dict == {"groundedness": 5, "correctness": 5, "conciseness": 5}
    assert detail.support == 1.0


def test_an_invented_answer_is_ungrounded_and_wrong():
    invented = "King Olaf the Second built it with Roman slaves during the Viking age."

    assert support_share(invented, PASSAGES) < 0.25
    assert groundedness(invented, PASSAGES) == 1
    assert correctness(invented, GOLD) == 1


def test_groundedness_follows_the_share_of_supported_content_words():
    # content words: quorrin, bridg, open, helga, strand, 1911 (supported) + painted, green (not): 6/8
    half_invented = "The Quorrin bridge, painted green, opened with Helga Strand in 1911."
    assert support_share(half_invented, PASSAGES) == pytest.approx(6 / 8)
    assert groundedness(half_invented, PASSAGES) == 4


def test_citation_markers_are_not_counted_as_claims():
    assert support_share("Helga Strand [1, 2]", PASSAGES) == 1.0


def test_an_abstention_on_an_unanswerable_question_scores_high():
    abstention = "The documents do not cover the population of Mars City."

    assert correctness(abstention, UNANSWERABLE) == 5
    assert groundedness(abstention, PASSAGES) == 5
    assert conciseness(abstention, UNANSWERABLE) == 5


def test_an_answer_to_an_unanswerable_question_is_invented():
    assert correctness("Mars City has 4,000 inhabitants.", UNANSWERABLE) == 1


def test_an_abstention_on_an_answerable_question_is_not_correct():
    assert correctness("The documents do not cover who opened the bridge.", GOLD) == 1


def test_correctness_maps_token_f1_to_the_table():
    # gold "Helga Strand opened the Quorrin bridge in 1911." has 8 tokens;
    # "Helga Strand" shares 2: precision 1, recall 2/8 -> F1 0.4 -> 3
    assert correctness("Helga Strand", GOLD) == 3
    # "Strand" alone: precision 1, recall 1/8 -> F1 0.22 -> 2
    assert correctness("Strand", GOLD) == 2


def test_a_rambling_answer_scores_low_on_conciseness():
    # target: the gold's 8 words, raised to the 10-word minimum; 60 words is 6x the target
    rambling = " ".join(["The bridge was opened by an engineer whose name was Helga Strand, and"] * 5)
    assert len(rambling.split()) == 65
    assert conciseness(rambling, GOLD) == 1


def test_a_looping_answer_loses_a_point():
    loop = "Helga Strand opened it. " * 4  # 16 words: 1.6x the target, and mostly repeats
    assert is_repetitive(loop)
    assert conciseness(loop, GOLD) == 3  # 4 by length, one less for looping
    assert not is_repetitive("The engineer Helga Strand opened the Quorrin bridge over the Ammel in 1911.")


def test_an_empty_answer_scores_one_on_everything():
    detail = score("", PASSAGES, GOLD)
    assert detail.scores.as_dict == {"groundedness": 1, "correctness": 1, "conciseness": 1}


# --- the judge's replies -------------------------------------------------------------


def test_the_strict_json_reply_is_read():
    scores = parse_judge_reply('{"groundedness": 4, "correctness": 2, "conciseness": 5}')
    assert scores is not None
    assert (scores.as_dict, scores.source) == ({"groundedness": 4, "correctness": 2, "conciseness": 5}, "judge")


def test_json_inside_prose_and_a_code_fence_is_read():
    reply = (
        "Sure! Here is my grading of the answer:\n```json\n"
        '{"Groundedness": "5", "correctness": 3.0, "conciseness": "4/5"}\n```\nThe answer is mostly right.'
    )
    assert parse_judge_reply(reply).as_dict == {"groundedness": 5, "correctness": 3, "conciseness": 4}


def test_the_first_complete_object_wins_over_an_incomplete_one():
    reply = 'Criteria: {"groundedness": "supported"} Scores: {"groundedness": 2, "correctness": 1, "conciseness": 3}'
    assert parse_judge_reply(reply).as_dict == {"groundedness": 2, "correctness": 1, "conciseness": 3}


def test_a_reply_cut_off_after_the_last_score_is_still_read():
    assert parse_judge_reply('{"groundedness": 4, "correctness": 2, "conciseness": 5').as_dict == {
        "groundedness": 4,
        "correctness": 2,
        "conciseness": 5,
    }


def test_name_value_pairs_without_json_are_read():
    reply = "Groundedness: 3\nCorrectness: 4/5\nconciseness = 2"
    assert parse_judge_reply(reply).as_dict == {"groundedness": 3, "correctness": 4, "conciseness": 2}


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "I think the answer is quite good overall.",
        '{"groundedness": 4, "correctness": 2}',  # a criterion missing
        '{"groundedness": 9, "correctness": 2, "conciseness": 5}',  # out of range
        '{"groundedness": 4.5, "correctness": 2, "conciseness": 5}',  # not a whole score
        '{"groundedness": 4, "correctness": 2, "concis',  # cut off before the third score
    ],
)
def test_a_reply_without_three_valid_scores_gives_none(reply):
    assert parse_judge_reply(reply) is None


def test_the_judge_sees_passages_reference_and_answer():
    system, user = judge_messages("Who opened it?", "Helga Strand [1]", PASSAGES, GOLD)
    assert system.role == "system" and '"groundedness"' in system.content
    assert "Who opened it?" in user.content and "Helga Strand [1]" in user.content
    assert "[1] The Quorrin bridge" in user.content and GOLD[0] in user.content
    _, unanswerable = judge_messages("Mars?", "", [], [])
    assert "(none: the documents do not answer it)" in unanswerable.content and "(empty)" in unanswerable.content
