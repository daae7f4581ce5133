"""Embedded models: llama.cpp in-process through llama-cpp-python, off the event loop."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from i18n import N_, Message, message_of
from models.base import (
    BackendError,
    ChatMessage,
    GenerationParams,
    Likelihood,
    StreamEnd,
    StreamEvent,
    TokenEvent,
    Usage,
)
from models.prompt_formats import Prompt, completion_prompt
from models.streaming import StopScanner

if TYPE_CHECKING:  # llama_cpp is imported where a model loads: importing it loads the native library
    from llama_cpp import Llama
    from llama_cpp.llama_types import ChatCompletionRequestMessage


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    # Resolves the GGUF file; called once, on first use, in a worker thread
    # (it may assemble a file from chunk packages).
    locate: Callable[[], Path]
    # "chat_template": the chat template stored in the GGUF file (instruction-tuned models).
    # "completion": a plain question/answer document (pretrained models).
    prompt_format: Literal["chat_template", "completion"] = "chat_template"


@dataclass
class _Loaded:
    llama: Llama
    format: Callable[[Sequence[ChatMessage]], Prompt]
    # A Llama object is not thread-safe: one generation at a time per model.
    lock: threading.Lock = field(default_factory=threading.Lock)


# What a model says when its prompt does not fit its context window (the evaluation counts them).
PROMPT_OVER_WINDOW = N_(
    "The question and its context ({tokens} tokens) do not fit the model's context window ({window} tokens)"
)
SCORED_OVER_WINDOW = N_("The text to score ({tokens} tokens) does not fit the context window")
OVER_WINDOW = (PROMPT_OVER_WINDOW, SCORED_OVER_WINDOW)


class EmbeddedBackend:
    """Runs GGUF models in-process. Models load lazily and stay loaded."""

    name = "embedded"

    def __init__(
        self,
        models: Sequence[EmbeddedModel],
        context_window: int = 4096,
        threads: int = 2,
        repeat_penalty: float = 1.1,
        concurrency: int = 1,
    ) -> None:
        self._models = {model.name: model for model in models}
        # Two decodes on the same cores each run at well under half speed (their
        # thread pools fight), so generations beyond `concurrency` wait their turn.
        self._decode_slots = threading.BoundedSemaphore(concurrency)
        self.context_window = context_window
        self.threads = threads
        # Models this small fall into loops, repeating one sentence until max_tokens;
        # a mild penalty on recent tokens stops that at almost no cost.
        self.repeat_penalty = repeat_penalty
        self._loaded: dict[str, _Loaded] = {}
        self._load_lock = threading.Lock()
        # Each model's tokenizer alone (`vocab_only`: no weights), for `count_tokens`; a lock of
        # its own, so that counting never waits for a model's weights to load.
        self._vocabularies: dict[str, Any] = {}
        self._vocabulary_lock = threading.Lock()
        # Scoring runs in a thread of its own at the decode threads' lower priority.
        self._scoring = ThreadPoolExecutor(1, "embedded-score", initializer=_yield_cpu_to_chats)

    async def list_models(self) -> list[str]:
        return list(self._models)

    def count_tokens(self, model: str, text: str) -> int:
        """The text's tokens for the model (see `TokenCounter`); blocking."""
        self._known(model)
        with self._vocabulary_lock:
            if model not in self._vocabularies:
                from llama_cpp import Llama

                path = str(self._models[model].locate())
                self._vocabularies[model] = Llama(model_path=path, vocab_only=True, verbose=False)
            vocabulary = self._vocabularies[model]
        return len(vocabulary.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _known(self, model: str) -> None:
        if model not in self._models:
            raise BackendError(
                Message(N_("There is no embedded model called {model}"), model=repr(model)),
                Message(N_("embedded models")),
                Message(N_("Choose one of: {models}."), models=", ".join(self._models)),
            )

    async def reply_likelihoods(
        self, model: str, conversations: Sequence[Sequence[ChatMessage]], reply: str
    ) -> list[Likelihood]:
        """How likely the model finds `reply` after each conversation (see `LikelihoodScorer`).
        Each prompt is read once, sharing what it has in common with the one before; only the
        reply's tokens get a row of logits."""
        self._known(model)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._scoring, self._score, model, [list(c) for c in conversations], reply)

    def _score(self, model: str, conversations: list[list[ChatMessage]], reply: str) -> list[Likelihood]:
        try:
            loaded = self.load(model)
        except Exception as error:
            raise BackendError(_could_not_load(error), model) from error
        with loaded.lock, self._decode_slots:
            return [self._likelihood(loaded, model, conversation, reply) for conversation in conversations]

    def _likelihood(self, loaded: _Loaded, model: str, conversation: list[ChatMessage], reply: str) -> Likelihood:
        import llama_cpp

        llama = loaded.llama
        text = loaded.format(conversation).text
        prompt = llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        # A completion prompt ends in "Answer:": the reply starts after a space.
        spaced = reply if text[-1:].isspace() else f" {reply}"
        tokens = llama.tokenize(spaced.encode("utf-8"), add_bos=False, special=False)[:_MAX_SCORED_TOKENS]
        if not tokens:
            return Likelihood(0.0, 0)
        if len(prompt) + len(tokens) > self.context_window:
            raise BackendError(Message(SCORED_OVER_WINDOW, tokens=len(prompt)), model)
        # Keep what the previous prompt has in common with this one; the last prompt token is
        # decoded again with the reply, since its row of logits predicts the reply's first token.
        cached = llama.input_ids[: llama.n_tokens]
        common = 0
        for a, b in zip(cached, prompt[:-1], strict=False):
            if a != b:
                break
            common += 1
        llama.n_tokens = common
        if prompt[common:-1]:
            llama.eval(prompt[common:-1])
        else:
            _forget(llama, common)
        start = len(prompt) - 1
        scored = [prompt[-1], *tokens[:-1]]
        batch = llama_cpp.llama_batch_init(len(scored), 0, 1)
        try:
            batch.n_tokens = len(scored)
            for i, token in enumerate(scored):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            if llama_cpp.llama_decode(llama.ctx, batch) != 0:
                raise BackendError(Message(N_("The embedded model could not score a reply")), model)
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llama.ctx), shape=(len(scored), llama.n_vocab()))
            peaks = rows.max(axis=1)
            log_sums = peaks + np.log(np.exp(rows - peaks[:, None]).sum(axis=1))
            logprob = float((rows[np.arange(len(tokens)), tokens] - log_sums).sum())
        finally:
            llama_cpp.llama_batch_free(batch)
            # The reply leaves the cache: the next prompt, or a generation, starts from the prompt.
            _forget(llama, start)
            llama.n_tokens = start
        return Likelihood(logprob, len(tokens), len(prompt))

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        self._known(model)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent | BackendError] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: StreamEvent | BackendError) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop closed under us (process shutting down)
                cancelled.set()

        worker = threading.Thread(
            target=self._generate,
            args=(model, list(messages), params, emit, cancelled),
            name=f"embedded-{model}",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                item = await events.get()
                if isinstance(item, BackendError):
                    raise item
                yield item
                if isinstance(item, StreamEnd):
                    return
        finally:
            # Reached on normal end, on aclose() and on task cancellation alike:
            # the worker sees the flag before its next token and stops.
            cancelled.set()

    async def aclose(self) -> None:
        await asyncio.to_thread(self._unload_all)
        self._scoring.shutdown(wait=False)

    def _unload_all(self) -> None:
        with self._load_lock:
            loaded, self._loaded = list(self._loaded.values()), {}
        for model in loaded:
            with model.lock:  # waits for a generation still running to see its cancel flag
                model.llama.close()

    def load(self, model: str) -> _Loaded:
        """Load a model (blocking); later calls return the loaded one."""
        with self._load_lock:
            if model not in self._loaded:
                self._loaded[model] = self._open(self._models[model])
            return self._loaded[model]

    def _open(self, spec: EmbeddedModel) -> _Loaded:
        from llama_cpp import Llama, llama_chat_format

        llama = Llama(
            model_path=str(spec.locate()),
            n_ctx=self.context_window,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )
        if spec.prompt_format == "completion":
            return _Loaded(llama, completion_prompt)

        template = llama.metadata["tokenizer.chat_template"]
        eos, bos = (
            llama.detokenize([token], special=True).decode() for token in (llama.token_eos(), llama.token_bos())
        )
        formatter = llama_chat_format.Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)

        def format_chat(messages: Sequence[ChatMessage]) -> Prompt:
            rendered = formatter(messages=[llama_message(m) for m in messages])
            stop = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop or ""]
            return Prompt(rendered.prompt, tuple(s for s in stop if s))

        return _Loaded(llama, format_chat)

    def _generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        emit: Callable[[StreamEvent | BackendError], None],
        cancelled: threading.Event,
    ) -> None:
        _yield_cpu_to_chats()
        try:
            loaded = self.load(model)
        except Exception as error:  # noqa: BLE001 - reported to the user, not raised in a thread
            emit(
                BackendError(
                    _could_not_load(error),
                    model,
                    Message(N_("Reinstall the project's packages (see the README's first command).")),
                )
            )
            return
        with loaded.lock:
            while not self._decode_slots.acquire(timeout=0.1):
                if cancelled.is_set():
                    return
            try:
                if cancelled.is_set():
                    return
                self._decode(loaded, model, messages, params, emit, cancelled)
            except Exception as error:  # noqa: BLE001
                emit(BackendError(Message(N_("The embedded model failed: {error}"), error=message_of(error)), model))
            finally:
                self._decode_slots.release()

    def _decode(
        self,
        loaded: _Loaded,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        emit: Callable[[StreamEvent | BackendError], None],
        cancelled: threading.Event,
    ) -> None:
        import llama_cpp

        llama = loaded.llama
        prompt = loaded.format(messages)
        prompt_tokens = llama.tokenize(prompt.text.encode("utf-8"), add_bos=True, special=True)
        room = self.context_window - len(prompt_tokens)
        if room < 1:
            emit(
                BackendError(
                    Message(PROMPT_OVER_WINDOW, tokens=len(prompt_tokens), window=self.context_window),
                    model,
                    Message(N_("Ask a shorter question, or raise EMBEDDED_CONTEXT_WINDOW.")),
                )
            )
            return
        max_tokens = min(params.max_tokens, room)
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        stops = StopScanner((*prompt.stop, *params.stop))
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held_logprob: float | None = None
        produced = 0
        emitted_any = False
        finish = "length"

        for token in llama.generate(
            prompt_tokens,
            temp=params.temperature,
            top_p=params.top_p,
            top_k=40,
            min_p=0.05,
            repeat_penalty=self.repeat_penalty,
        ):
            if cancelled.is_set():
                finish = "cancelled"
                break
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            produced += 1
            if params.logprobs:
                logprob = _chosen_token_logprob(llama, token)
                held_logprob = logprob if held_logprob is None else min(held_logprob, logprob)
            text = stops.feed(utf8.decode(llama.detokenize([token])))
            if not emitted_any:
                # Completion-style prompts end in "Answer:", so the first token carries a space.
                text = text.lstrip()
            if text:
                emitted_any = True
                emit(TokenEvent(text, held_logprob))
                held_logprob = None
            if stops.stopped:
                finish = "stop"
                break
            if produced >= max_tokens:
                break

        tail = "" if stops.stopped else stops.feed(utf8.decode(b"", final=True)) + stops.flush()
        if tail and finish != "cancelled":
            emit(TokenEvent(tail, held_logprob))
        emit(StreamEnd(Usage(len(prompt_tokens), produced), finish))


def _forget(llama: Llama, position: int) -> None:
    """Drop the cached tokens from `position` on (every sequence)."""
    import llama_cpp

    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llama.ctx), -1, position, -1)


# A reply scored is a question or a sentence: longer ones are judged on their start.
_MAX_SCORED_TOKENS = 128


def llama_message(message: ChatMessage) -> ChatCompletionRequestMessage:
    """A message as llama-cpp-python's types spell it (one TypedDict per role)."""
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    return {"role": "assistant", "content": message.content}


def _chosen_token_logprob(llama: Llama, token: int) -> float:
    """Log-probability of the token just sampled, from the last row of logits.

    Asking llama.cpp for logprobs (logits_all) makes decoding about 3x slower;
    reading the single row that the sampler just used costs one log-sum-exp.
    Using the emitted token (not the argmax) keeps it right when sampling.
    """
    import llama_cpp

    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),))
    peak = row.max()
    log_sum = peak + np.log(np.exp(row - peak).sum())
    return float(row[token] - log_sum)


# How much lower than the app's event loop decoding runs (Linux "nice" steps).
DECODE_NICENESS = 10


def _yield_cpu_to_chats() -> None:
    """Let the event loop, which every chat shares, win the CPU over this decode thread.

    When decoding, file reading and the chats want more cores than there are, a decode
    thread at the same priority takes CPU slices the loop is waiting for and every chat
    stutters. Lower priority changes nothing on an idle machine. Linux applies it per
    thread (and to the threads llama.cpp starts from this one); elsewhere it is skipped.
    llama.cpp releases the interpreter lock while it computes, so a lower priority here
    cannot keep the loop waiting for the lock.
    """
    if sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + DECODE_NICENESS))


def _could_not_load(error: BaseException) -> Message:
    return Message(N_("Could not load the embedded model ({error})"), error=message_of(error))
