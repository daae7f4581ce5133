"""Stop sequences and the batching of tokens for the browser."""

from __future__ import annotations

from models.streaming import StopScanner, TokenBatcher, close_code_block


def test_text_before_a_stop_sequence_is_emitted_and_the_stop_is_not():
    scanner = StopScanner(["\nQuestion:"])
    emitted = scanner.feed("Paris.") + scanner.feed("\nQues") + scanner.feed("tion: next")

    assert emitted == "Paris."
    assert scanner.stopped


def test_a_possible_stop_is_held_back_until_it_turns_out_not_to_be_one():
    scanner = StopScanner(["\n\n"])

    assert scanner.feed("one\n") == "one"
    assert scanner.feed("two") == "\ntwo"
    assert not scanner.stopped


def test_held_back_text_comes_out_at_the_end():
    scanner = StopScanner(["<|im_end|>"])
    assert scanner.feed("done<|im") == "done"
    assert scanner.flush() == "<|im"


def test_the_first_token_is_sent_at_once_and_later_ones_are_batched():
    batcher = TokenBatcher(interval_s=0.04)

    assert batcher.add("Hello", now=10.0) == "Hello"
    assert batcher.add(" big", now=10.01) is None
    assert batcher.add(" wide", now=10.02) is None
    assert batcher.add(" world", now=10.05) == " big wide world"
    assert batcher.add("!", now=10.06) is None
    assert batcher.flush() == "!"


def test_a_code_block_left_open_is_closed_and_a_closed_one_left_alone():
    assert close_code_block("Run:\n```bash\nmake run") == "Run:\n```bash\nmake run\n```"
    assert close_code_block("Run `make run`.\n```\nx\n```") == "Run `make run`.\n```\nx\n```"
