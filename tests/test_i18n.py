"""The app's own words in other languages (i18n/): every marked string has a checked translation
that keeps its placeholders, browser language tags find their catalog, and a chat whose browser
asks for Telugu is served in Telugu."""

from __future__ import annotations

import ast
import pickle
import re
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from chainlit.server import app as http_app

import i18n
from answering.attempts import Answer, generate
from answering.confidence import Signals
from answering.grounding import Evidence, GuardMode, guard_text
from answering.pipeline import FinalAnswer, TurnDone
from answering.reply import reply_for
from answering.router import Mode, Thresholds, decide
from answering.timings import PhaseTimings
from i18n import N_, chat_language, localise, normalise, supported_languages, translator
from models.base import ChatMessage, GenerationParams
from models.catalog import EMBEDDED_LLM, EMBEDDED_SLM, ModelSpec
from models.settings import Settings
from rag.parsing import UploadError, parse_file
from tests.chainlit_client import ChainlitClient
from tests.fakes import ScriptedBackend
from tests.in_process import app_in_process
from tests.servers import PROJECT_ROOT
from web.chat import COMMANDS_HELP, language_of
from web.turn_view import TIMINGS_ELEMENT

# `make messages` extracts from the project root with this mapping (babel.cfg says from where).
MAPPING = PROJECT_ROOT / "babel.cfg"
TELUGU_BROWSER = "te-IN,te;q=0.9,en-US;q=0.8,en;q=0.7"


def extracted() -> dict[str | tuple[str, ...], Message]:
    """Every marked string in the code now, extracted as `make messages` does."""
    with MAPPING.open() as mapping:
        method_map, options_map = parse_mapping_cfg(mapping, str(MAPPING))
    template = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(
        PROJECT_ROOT, method_map, options_map, comment_tags=("Translators:",)
    ):
        template.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return {message.id: message for message in template if message.id}


def catalog(language: str) -> Catalog:
    with i18n.catalog_path(language).open("rb") as po:
        return read_po(po, locale=language)


def test_the_code_marks_strings_and_telugu_has_a_catalog():
    marked = extracted()
    assert "Latency breakdown" in marked and COMMANDS_HELP in marked
    assert "te" in supported_languages()


@pytest.mark.parametrize("language", supported_languages())
def test_every_marked_string_has_a_checked_translation(language):
    translations = catalog(language)
    untranslated = []
    for msgid, marked in extracted().items():
        translated = translations.get(msgid)
        if translated is None or translated.fuzzy or translated.pluralizable != marked.pluralizable:
            untranslated.append(msgid)
            continue
        strings = list(translated.string) if translated.pluralizable else [translated.string]
        if not all(strings) or (translated.pluralizable and len(strings) != translations.num_plurals):
            untranslated.append(msgid)
    assert not untranslated, (
        f"Not translated (or fuzzy) in {i18n.catalog_path(language).relative_to(PROJECT_ROOT)}: run `make messages`, "
        f"then translate these: {untranslated}"
    )


def test_the_template_is_up_to_date():
    with i18n.TEMPLATE.open("rb") as pot:
        template = {message.id for message in read_po(pot) if message.id}
    missing = set(extracted()) - template
    assert not missing, f"i18n/locale/messages.pot is out of date (no {sorted(missing, key=str)}): run `make messages`"


# {name}, {name:.2f}, {0}, {} ; %(name)s, %s, %d, %.2f (not %%)
_BRACES = re.compile(r"\{([^{}]*)\}")
_PERCENT = re.compile(r"%(?:\([A-Za-z_]\w*\))?[#0 +-]*\d*(?:\.\d+)?[sdifrxXeEgGc]")
# Literals a user types or a link follows: kept as they are in every language.
_LITERALS = re.compile(r"\]\([^)]*\)|(?<![\w/])/(?:uploads|remove|compare)\b|\*\*|`")


def placeholders(text: str) -> list[str]:
    text = text.replace("{{", "").replace("}}", "").replace("%%", "")
    return sorted([f"{{{name}}}" for name in _BRACES.findall(text)] + _PERCENT.findall(text))


def literals(text: str) -> list[str]:
    return sorted(_LITERALS.findall(text))


def translation_problems(message: Message) -> list[str]:
    """What a translation changed that it must keep: placeholders, commands, links, Markdown marks."""
    if not message.id or not message.string:
        return []
    ids = list(message.id) if isinstance(message.id, tuple) else [message.id]
    strings = list(message.string) if isinstance(message.string, tuple) else [message.string]
    expected_placeholders = placeholders(ids[-1])  # the plural forms share the plural msgid's
    problems = []
    for string in strings:
        if string and placeholders(string) != expected_placeholders:
            problems.append(f"{ids[0]!r}: {string!r} has {placeholders(string)}, not {expected_placeholders}")
        if string and literals(string) != literals(ids[-1]):
            problems.append(f"{ids[0]!r}: {string!r} has {literals(string)}, not {literals(ids[-1])}")
    return problems


@pytest.mark.parametrize("language", supported_languages())
def test_every_translation_keeps_the_placeholders_and_literals_of_its_msgid(language):
    problems = [problem for message in catalog(language) for problem in translation_problems(message)]
    assert not problems, "\n".join(problems)


def test_a_translation_that_drops_or_renames_a_placeholder_is_caught():
    def problems(msgid: str | tuple[str, str], string: str | tuple[str, str]) -> list[str]:
        return translation_problems(Message(msgid, string))

    assert not problems("Removed **{file}**.", "**{file}** తీసివేశాం.")
    assert problems("Removed **{file}**.", "తీసివేశాం.")  # dropped
    assert problems("Removed **{file}**.", "**{ఫైల్}** తీసివేశాం.")  # renamed
    assert problems("Removed **{file}**.", "{file} తీసివేశాం.")  # lost its bold
    assert problems("%(count)d files", "ఫైళ్లు")
    assert problems("%s and %d", "%s మరియు")
    assert not problems("{seconds:.2f} s and 100%%", "{seconds:.2f} సె, 100%%")
    assert problems("Type `/uploads`", "`/అప్‌లోడ్‌లు` టైప్ చేయండి")  # a command is typed as it is
    assert problems("the [page](/compare)", "[పేజీ](/పోలిక)")
    chunks = ("{count} chunk in {seconds} s.", "{count} chunks in {seconds} s.")
    assert not problems(chunks, ("{seconds} సెకన్లలో {count} ముక్క.", "{seconds} సెకన్లలో {count} ముక్కలు."))
    assert problems(chunks, ("{seconds} సెకన్లలో ఒక ముక్క.", "{seconds} సెకన్లలో {count} ముక్కలు."))


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("te", "te"),
        ("te-IN", "te"),
        ("te_IN", "te"),
        ("TE", "te"),
        ("te-in", "te"),
        (" te-IN,te;q=0.9,en;q=0.8", "te"),  # an Accept-Language header
        ("en-US", None),
        ("en", None),
        ("fr-FR", None),  # no catalog: English
        ("", None),
        (None, None),
        ("../../etc", None),
        ("te-IN/../x", None),
    ],
)
def test_browser_language_tags_find_their_catalog(tag, expected):
    assert normalise(tag) == expected


def test_english_and_unknown_languages_give_the_msgids_and_telugu_its_catalog():
    assert translator("en-US").gettext(TIMINGS_ELEMENT) == "Latency breakdown"
    assert translator("xx").gettext(TIMINGS_ELEMENT) == "Latency breakdown"
    assert translator(None).ngettext("{count} chunk", "{count} chunks", 2) == "{count} chunks"
    telugu = translator("te-IN")
    assert telugu is translator("TE") is translator("te")  # one compiled catalog per language
    assert telugu.gettext(TIMINGS_ELEMENT) == "జాప్యం వివరాలు"
    added = (
        "📄 Added **{file}** ({title}): {count} chunk in {seconds} s.",
        "📄 Added **{file}** ({title}): {count} chunks in {seconds} s.",
    )
    assert telugu.ngettext(*added, 1).endswith("{count} ముక్క.")
    assert telugu.ngettext(*added, 3).endswith("{count} ముక్కలు.")
    assert telugu.gettext("a string nobody marked") == "a string nobody marked"
    assert N_("Latency breakdown") == "Latency breakdown"


def test_a_message_is_its_english_text_and_keeps_what_translates_it():
    reason = i18n.Message(N_("the passages never state {terms}"), terms="9431")

    assert reason == "the passages never state 9431" and "9431" in reason and f"{reason}." == reason + "."
    assert reason.text(None) == reason.text("en-US") == "the passages never state 9431"
    assert reason.text("te") == localise(reason, "te-IN") == "భాగాలు ఎక్కడా 9431 అని చెప్పడం లేదు"
    sent = pickle.loads(pickle.dumps(reason))  # as the upload reader's process sends a refusal back
    assert isinstance(sent, i18n.Message) and sent.text("te") == reason.text("te")
    nested = i18n.Message(N_("Could not load the embedded model ({error})"), error=FileNotFoundError(reason))
    assert str(nested) == "Could not load the embedded model (the passages never state 9431)"
    assert nested.text("te") == "యాప్‌లోనే నడిచే మోడల్‌ను లోడ్ చేయలేకపోయాం (భాగాలు ఎక్కడా 9431 అని చెప్పడం లేదు)"
    assert localise("words of the documents", "te") == "words of the documents"


SMALL_MODEL = ModelSpec("embedded:small", "embedded", "small", 4096)
SERVER_MODEL = ModelSpec("server:large", "server", "large", 4096)


async def test_an_escalation_reason_a_cut_note_and_a_backend_error_are_shown_in_telugu():
    """Made where the language is not known (the router, the support check, the model call),
    said in the chat's language where the reply is made."""
    decision = decide(Signals(answer_tokens=20, retrieval_score=0.12, abstained=False), Mode.ESCALATE, Thresholds())
    checked = guard_text(
        "It listens on port 9431.", Evidence.of(["Foundry Local listens on port 5273."]), GuardMode.STOP
    )
    small = Answer(SMALL_MODEL, "It listens on port 9431.", "guard", None, 0.1, 0.5, checked=checked)
    # No server backend configured: the attempt fails with a BackendError.
    failed = (await generate(SERVER_MODEL, [ChatMessage("user", "Port?")], GenerationParams(), {})).answer

    def how(language: str | None) -> str:
        final = FinalAnswer("", "none", language=language)
        return reply_for(TurnDone(PhaseTimings(), small, failed, decision, final)).how

    english, telugu = how(None), how("te-IN")

    assert (
        "*✂️ Cut 1 sentence the documents do not support and the model was stopped: the passages never "
        "state 9431.*" in english
    )
    assert (
        "Router (escalate): escalated to the large model: the best passage matched weakly (score 0.12 < 0.30)."
        in english
    )
    assert (
        "**large (server)** failed: No server backend is configured (large (server)). Set MODEL_SERVER_URL" in english
    )
    assert "*✂️ పత్రాలు సమర్థించని 1 వాక్యాన్ని కత్తిరించి, మోడల్‌ను ఆపాం: భాగాలు ఎక్కడా 9431 అని చెప్పడం లేదు.*" in telugu
    assert "రౌటర్ (escalate): పెద్ద మోడల్‌కు అప్పగించింది: ఉత్తమ భాగం కూడా బలహీనంగానే సరిపోలింది (స్కోరు 0.12 < 0.30)." in telugu
    assert (
        "**large (server)** విఫలమైంది: server బ్యాకెండ్ ఏదీ అమర్చలేదు (large (server)). సర్వర్ మోడళ్లను వాడాలంటే "
        "MODEL_SERVER_URL అమర్చండి." in telugu
    )
    assert not re.search(r"\b(?:Cut|Router|failed|passages|configured)\b", telugu), telugu


def test_an_upload_refusal_is_said_in_the_chats_language(tmp_path):
    empty = tmp_path / "notes.md"
    empty.write_text("")
    with pytest.raises(UploadError) as refused:
        parse_file(empty, "notes.md", 1 << 20)
    assert refused.value.reason == "the file is empty"
    assert localise(refused.value.reason, "te") == "ఫైల్ ఖాళీగా ఉంది"
    assert localise(refused.value, "te") == "notes.md: ఫైల్ ఖాళీగా ఉంది"


def test_the_language_setting_overrides_the_browsers():
    assert chat_language("te") == "te"
    assert chat_language(None) is None  # no Chainlit session in this test
    assert language_of(SimpleNamespace(settings=Settings(language="te"))) == "te"
    assert language_of(SimpleNamespace(settings=Settings(language=None))) is None  # the browser's, here none


def test_i18n_imports_nothing_of_the_project():
    """A leaf package: web and answering can both use it."""
    ours = {"models", "rag", "answering", "evaluation", "web", "bench", "deploy", "app", "tests"}
    imported = set()
    for path in (PROJECT_ROOT / "i18n").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert not imported & ours
    assert imported <= {*sys.stdlib_module_names, "babel", "__future__"}


def test_the_welcome_page_has_a_telugu_version_with_the_same_sections():
    english = (PROJECT_ROOT / "chainlit.md").read_text()
    telugu = (PROJECT_ROOT / "chainlit_te.md").read_text()
    assert len(re.findall(r"^#+ ", telugu, re.M)) == len(re.findall(r"^#+ ", english, re.M))
    assert re.search(r"[\u0C00-\u0C7F]", telugu) and "(/compare)" in telugu and "`/uploads`" in telugu


# --- a chat whose browser asks for Telugu


class BrowserClient(ChainlitClient):
    """A tab of a browser set to `accept_language`: its socket's handshake carries the header,
    from which Chainlit takes the session's language."""

    def __init__(self, base_url: str, accept_language: str) -> None:
        super().__init__(base_url)
        connect = self._sio.connect

        async def connect_in_language(*args, headers=None, **kwargs):
            return await connect(*args, headers={**(headers or {}), "Accept-Language": accept_language}, **kwargs)

        self._sio.connect = connect_in_language


ANSWER = ["Foundry ", "Local ", "usually ", "listens ", "on ", "port ", "5273 ", "[1]."]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("in-process-telugu")
    settings = Settings(data_dir=folder / "data", model_cache_dir=folder / "models", router_mode="off")
    models = ScriptedBackend({EMBEDDED_SLM: ANSWER, EMBEDDED_LLM: ANSWER})
    with app_in_process(settings, {"embedded": models}) as app:
        yield app.url


@pytest.fixture
async def telugu_chat(app_url):
    client = BrowserClient(app_url, TELUGU_BROWSER)
    opened = await client.connect()
    yield client, opened
    await client.close()


def _outputs(turn) -> list[str]:
    return [message["output"] for message in turn.messages]


async def test_a_chat_started_in_telugu_is_welcomed_in_telugu(telugu_chat):
    _, opened = telugu_chat
    telugu = translator("te")

    [welcome] = [text for text in _outputs(opened) if text]
    assert welcome.startswith("మీ బృందం పత్రాల గురించి నన్ను అడగండి")
    assert telugu.gettext(COMMANDS_HELP) in welcome and "`/uploads`" in welcome
    assert "Ask me" not in welcome
    [panel] = opened.named("chat_settings")
    labels = {widget["id"]: widget["label"] for widget in panel["value"]}
    assert labels["slm"] == "చిన్న మోడల్ (మొదట సమాధానం ఇస్తుంది)"
    assert all(re.search(r"[\u0C00-\u0C7F]", label) for label in labels.values()), labels


async def test_a_telugu_chats_replies_and_panels_are_in_telugu(telugu_chat):
    client, _ = telugu_chat

    uploads = await client.ask("/uploads")
    removed = await client.ask("/remove nothing.md")
    answered = await client.ask("On which port does Foundry Local usually listen?")

    assert _outputs(uploads)[-1].startswith("ఈ చాట్‌లో ఇంకా ఏ ఫైలూ అప్‌లోడ్ చేయలేదు.")
    assert _outputs(removed)[-1].startswith("**nothing.md** అనే పేరుతో")
    reply = _outputs(answered)[-1]
    assert reply.startswith("Foundry Local usually listens on port 5273 [1].")  # the model's own words
    assert "ఆధారాలు: [1]" in reply and "జాప్యం వివరాలు · ఈ సెషన్ జాప్యం చార్ట్" in reply
    side = {element["name"]: element for element in answered.named("element")}
    breakdown = await client.element_text(side["జాప్యం వివరాలు"])
    assert "| దశ | సమయం |" in breakdown and "| మోడల్ |" in breakdown and "రౌటర్ (off)" in breakdown
    passage = await client.element_text(side["[1]"])
    assert "పత్రం: " in passage and "స్కోరు: " in passage


async def test_the_language_setting_serves_an_english_browser_in_telugu(app_url, monkeypatch):
    # LANGUAGE=te on the running app (its settings are read as each chat starts).
    monkeypatch.setattr(http_app.state.assistant.settings, "language", "te")
    client = BrowserClient(app_url, "en-US,en;q=0.9")
    try:
        opened = await client.connect()
    finally:
        await client.close()
    assert next(text for text in _outputs(opened) if text).startswith("మీ బృందం పత్రాల గురించి")


async def test_an_english_browser_still_gets_english(app_url):
    client = BrowserClient(app_url, "en-GB,en;q=0.9")
    try:
        opened = await client.connect()
        uploads = await client.ask("/uploads")
    finally:
        await client.close()
    assert next(text for text in _outputs(opened) if text).startswith("Ask me about your team's documents")
    assert _outputs(uploads)[-1].startswith("No files uploaded in this chat yet.")
