"""The app's own words in the user's language: gettext catalogs, made and read with Babel.

A leaf package (it imports nothing of ours), so that `web` and `answering` can both use it.

- `translator(language)`: the translations for a language tag as a browser sends it ("te-IN",
  "te_IN", "TE" and "te" all mean the Telugu catalog); English, or a language without a
  catalog, gets the msgids themselves. Use it where the text is made:
  `_ = translator(language).gettext`, then `_("Removed **{name}**.").format(name=...)`.
- `N_(text)`: marks a module-level constant for extraction; translate it where it is used.
- `chat_language(setting)`: the language of the chat being served: the LANGUAGE setting when
  set, else the browser's (Chainlit's `session.language`, read from Accept-Language).
- `Message(N_("the passages never state {terms}"), terms=...)`: words made where the reader's
  language is not known (a cut or escalation reason, an error): a `str` holding the English
  text, which keeps its msgid and parameters to be said in the reader's language where it is
  shown: `localise(value, language)`.

The catalogs are `locale/<language>/LC_MESSAGES/messages.po`; the template `locale/messages.pot`
is extracted by `make messages` (babel.cfg), which also merges new strings into every catalog.
The .po is compiled in memory, with Babel, the first time a language is asked for: no compiled
.mo file is kept or built, so a fresh clone, `make run` and `make test` need no build step, and
an edited .po takes effect at the next start. docs/translations.md says how to add a string or
a language.
"""

from __future__ import annotations

import functools
import gettext
import io
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"

__all__ = [
    "DOMAIN",
    "LOCALE_DIR",
    "N_",
    "TEMPLATE",
    "Message",
    "catalog_path",
    "chat_language",
    "localise",
    "message_of",
    "normalise",
    "supported_languages",
    "translator",
]


def N_(text: str) -> str:  # noqa: N802 - gettext's conventional name, which extraction looks for
    """Marks `text` as a message to translate, and returns it unchanged: translate it at use."""
    return text


def catalog_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def supported_languages() -> list[str]:
    """The languages with a catalog (English, the msgids' language, needs none)."""
    return sorted(_supported())


@functools.cache
def _supported() -> frozenset[str]:
    # Read once per process: a catalog added later is seen at the next start.
    return frozenset(path.parent.parent.name for path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def normalise(language: str | None) -> str | None:
    """The catalog for a language tag (`te-IN`, `te_IN`, `TE`: "te"), or None for English (the
    msgids): English itself, no language, or one without a catalog. A catalog for the region
    (`pt_BR`) is preferred to the language's (`pt`)."""
    if not language:
        return None
    # "te-IN,te;q=0.9": an Accept-Language header's first choice.
    tag = re.split(r"[,;\s]", language.strip(), maxsplit=1)[0]
    parts = [part for part in re.split(r"[-_]", tag) if part]
    if not parts or not all(part.isalnum() for part in parts):
        return None
    primary = parts[0].lower()
    supported = _supported()
    candidates = [f"{primary}_{parts[1].upper()}", primary] if len(parts) > 1 else [primary]
    return next((candidate for candidate in candidates if candidate in supported), None)


def translator(language: str | None) -> gettext.NullTranslations:
    """The translations for `language` (any tag `normalise` understands); `gettext` and
    `ngettext` give the msgids themselves for English or a language without a catalog."""
    return _translations(normalise(language))


@functools.cache
def _translations(language: str | None) -> gettext.NullTranslations:
    if language is None:
        return gettext.NullTranslations()
    # Imported here: only a chat in a translated language pays for loading Babel.
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with catalog_path(language).open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    # Fuzzy entries (guessed by `pybabel update`, not yet checked) are left out: the English
    # text is better than a wrong translation.
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def chat_language(setting: str | None = None) -> str | None:
    """The language to answer the current chat in: `setting` (LANGUAGE) when given, else the
    browser's language of the Chainlit session being served, else None (English).

    Chainlit is not imported here: outside the chat app (evaluation, tests of the pipeline)
    there is no session, and importing Chainlit would create files in the working directory.
    """
    if setting:
        return setting
    chainlit_context = sys.modules.get("chainlit.context")
    if chainlit_context is None:
        return None
    try:
        session = chainlit_context.get_context().session
    except chainlit_context.ChainlitContextException:  # not serving a chat
        return None
    language = getattr(session, "language", None)
    return language if isinstance(language, str) else None


class Message(str):
    """Words of the app made where the reader's language is not known yet: a cut sentence's
    reason, an escalation reason, an error. It is the English text, as a `str`: it compares,
    formats, logs and serialises as the English words, so code and tests that read them need
    not know. It also keeps its msgid and named parameters, to be said in the reader's language
    where it is shown: `message.text(language)`, or `localise(value, language)`.

        reason = Message(N_("the passages never state {terms}"), terms="9431")
        reason == "the passages never state 9431"
        reason.text("te")  # the Telugu catalog's translation, formatted with terms="9431"

    Mark the msgid with `N_` where the message is made (or use a constant marked with `N_`):
    that is what `make messages` extracts. The parameters are formatted with `str.format`,
    English and translation alike, so format specs (`{share:.0%}`) work in both; a parameter
    that is itself a Message (or has a `text(language)` method, as `models.base.BackendError`)
    is said in the same language. A string method that makes a new string (`rstrip`, `+`,
    slicing) gives a plain `str`: the English words only.
    """

    msgid: str
    params: Mapping[str, object]

    def __new__(cls, msgid: str, /, **params: Any) -> Message:
        message = super().__new__(cls, msgid.format(**params))
        message.msgid = msgid
        message.params = MappingProxyType(params)
        return message

    def text(self, language: str | None = None) -> str:
        """The message in `language` (English, the msgids' language, when None or without a
        catalog, or while its msgid has no translation)."""
        if normalise(language) is None:
            return str(self)
        translated = translator(language).gettext(self.msgid)
        params = {
            name: localise(value, language) if _translatable(value) or isinstance(value, BaseException) else value
            for name, value in self.params.items()
        }
        try:
            return translated.format(**params)
        except (KeyError, IndexError, ValueError):  # a translation naming a parameter there is not
            return str(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its msgid and parameters (the upload reader's process sends refusals back).
        return (_message, (self.msgid, dict(self.params)))


def _message(msgid: str, params: dict[str, Any]) -> Message:
    return Message(msgid, **params)


def localise(value: object, language: str | None) -> str:
    """`value` as a reader of `language` reads it: a `Message` translated; an object with a
    `text(language)` method (`models.base.BackendError`) as that method says it; an exception
    raised with a Message, that Message translated (`message_of`); anything else (a plain
    `str`, words from the documents or a model) as `str` gives it."""
    if isinstance(value, Message):
        return value.text(language)
    if _translatable(value):
        text = value.text(language)  # type: ignore[attr-defined]
        return text if isinstance(text, str) else str(value)
    if isinstance(value, BaseException):
        return localise(message_of(value), language) if value.args else str(value)
    return str(value)


def message_of(error: BaseException) -> str:
    """What an exception says: the Message it was raised with (`FileNotFoundError(Message(...))`),
    still translatable, when that is its only argument; else `str(error)`. For an exception's
    words inside another message: `Message(N_("Could not load it ({error})"), error=message_of(error))`."""
    if len(error.args) == 1 and isinstance(error.args[0], Message):
        return error.args[0]
    return str(error)


def _translatable(value: object) -> bool:
    """A Message, or an object that says itself in a language: `text(language)`, a method (an
    answer's or a cut's `text` is its words, not a method)."""
    return isinstance(value, Message) or callable(getattr(value, "text", None))
