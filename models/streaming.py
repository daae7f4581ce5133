"""Small, pure helpers for streamed text: stop sequences and UI batching."""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Finds stop sequences in streamed text without ever emitting part of one.

    Text that could be the beginning of a stop sequence is held back until the
    next piece shows whether it is.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what is now safe to emit. Sets `stopped` on a match."""
        self._pending += text
        cut = min(
            (index for stop in self._stops if (index := self._pending.find(stop)) >= 0),
            default=-1,
        )
        if cut >= 0:
            self.stopped = True
            safe, self._pending = self._pending[:cut], ""
            return safe
        hold = self._longest_stop_prefix_at_end()
        safe = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(safe) :]
        return safe

    def flush(self) -> str:
        """The held-back text, once the stream has ended without a stop."""
        rest, self._pending = self._pending, ""
        return rest

    def _longest_stop_prefix_at_end(self) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest


class TokenBatcher:
    """Coalesces streamed tokens into batches of about `interval_s`.

    The browser re-renders the message on every update, so sending each token
    alone makes long answers stutter; the first token goes out at once so that
    time to first token is what the user sees.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._parts: list[str] = []
        self._last_flush: float | None = None

    def add(self, text: str, now: float) -> str | None:
        """Buffer `text`; return a batch when it is time to send one."""
        self._parts.append(text)
        if self._last_flush is None or now - self._last_flush >= self.interval_s:
            self._last_flush = now
            return self.flush()
        return None

    def flush(self) -> str:
        batch = "".join(self._parts)
        self._parts.clear()
        return batch


def close_code_block(markdown: str) -> str:
    """Close a code block the model left open.

    Small models open code blocks and never close them; whatever is appended
    after the answer (sources, model, timings) must not end up inside one.
    """
    return markdown + "\n```" if markdown.count("```") % 2 else markdown
