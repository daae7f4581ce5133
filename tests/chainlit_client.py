"""Talks to a running Chainlit app the way its web page does, over Socket.IO."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import socketio


@dataclass
class Turn:
    """Everything the server emitted while handling one message."""

    events: list[tuple[str, dict]] = field(default_factory=list)

    def named(self, name: str) -> list[dict]:
        return [data for event, data in self.events if event == name]

    @property
    def messages(self) -> list[dict]:
        """Final state of each message sent in the turn, in order of first appearance."""
        latest: dict[str, dict] = {}
        for event, data in self.events:
            if event in ("new_message", "update_message", "stream_start"):
                latest[data["id"]] = data
        return list(latest.values())

    def streamed_text(self) -> str:
        starts = self.named("stream_start")
        tokens = self.named("stream_token")
        return "".join([s.get("output", "") for s in starts] + [t["token"] for t in tokens])


class ChainlitClient:
    """One browser tab: signs in (silently as the local user, or with `credentials`), then chats."""

    def __init__(self, base_url: str, credentials: tuple[str, str] | None = None) -> None:
        self.base_url = base_url
        self.credentials = credentials
        self.session_id = str(uuid.uuid4())
        self.http = httpx.AsyncClient(base_url=base_url)  # keeps the login cookie, as the browser does
        self._sio = socketio.AsyncClient(reconnection=False)
        self._events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()

        @self._sio.on("*")
        async def record(event: str, data: Any = None) -> None:  # any JSON value
            self._events.put_nowait((event, data if isinstance(data, dict) else {"value": data}))

    async def sign_in(self) -> None:
        """What the page does before opening its socket: log in if the app asks for it."""
        auth = (await self.http.get("/auth/config")).json()
        if not auth.get("requireLogin"):
            return
        if self.credentials:
            name, password = self.credentials
            response = await self.http.post("/login", data={"username": name, "password": password})
        elif auth.get("headerAuth"):
            response = await self.http.post("/auth/header")
        else:
            raise PermissionError("The app requires a login and no credentials were given")
        response.raise_for_status()

    async def connect(self, thread_id: str = "", sign_in: bool = True) -> Turn:
        """Open a session (resuming `thread_id` if given); returns what `on_chat_start`
        or `on_chat_resume` sent."""
        if sign_in:
            await self.sign_in()
        cookies = "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())
        await self._sio.connect(
            self.base_url,
            socketio_path="/ws/socket.io",
            transports=["websocket"],
            headers={"Cookie": cookies} if cookies else {},
            auth={
                "clientType": "webapp",
                "sessionId": self.session_id,
                "threadId": thread_id,
                "userEnv": "{}",
                "chatProfile": "",
            },
        )
        await self._sio.emit("connection_successful")
        return await self._collect(until=_task_end_after_start())

    async def upload(self, name: str, content: bytes, mime: str) -> str:
        """Upload a file as the page does before sending a message; returns its id."""
        response = await self.http.post(
            "/project/file",
            params={"session_id": self.session_id},
            files={"file": (name, content, mime)},
        )
        response.raise_for_status()
        return response.json()["id"]

    async def element_text(self, element: dict) -> str:
        """The content of a text element, fetched as the page fetches it."""
        if element.get("url"):  # a stored element of a saved chat
            response = await self.http.get(element["url"])
        else:
            response = await self.http.get(
                f"/project/file/{element['chainlitKey']}", params={"session_id": self.session_id}
            )
        response.raise_for_status()
        return response.text

    async def send(self, text: str, file_ids: tuple[str, ...] = ()) -> None:
        """Send a user message (with uploaded files) without waiting for the answer."""
        message = {
            "id": str(uuid.uuid4()),
            "threadId": "",
            "name": "User",
            "type": "user_message",
            "output": text,
            "createdAt": datetime.now(UTC).isoformat(),
        }
        references = [{"id": file_id} for file_id in file_ids]
        await self._sio.emit("client_message", {"message": message, "fileReferences": references})

    async def ask(self, text: str, file_ids: tuple[str, ...] = (), timeout_s: float = 120) -> Turn:
        await self.send(text, file_ids)
        return await self._collect(until=_task_end_after_start(), timeout_s=timeout_s)

    async def change_settings(self, settings: dict) -> Turn:
        """Submit the settings panel; waits for the app's on_settings_update task to end."""
        await self._sio.emit("chat_settings_change", settings)
        return await self._collect(until=_task_end_after_start())

    async def stop(self) -> None:
        await self._sio.emit("stop")

    async def wait_for(self, event_name: str, timeout_s: float = 60) -> Turn:
        return await self._collect(until=lambda event, data: event == event_name, timeout_s=timeout_s)

    async def collect_until_task_end(self, timeout_s: float = 60) -> Turn:
        """The rest of a turn that has already started."""
        return await self._collect(until=_task_end_after_start(seen_start=True), timeout_s=timeout_s)

    async def close(self) -> None:
        await self._sio.disconnect()
        await self.http.aclose()

    async def _collect(self, until: Callable[[str, dict], bool], timeout_s: float = 60) -> Turn:
        turn = Turn()
        async with asyncio.timeout(timeout_s):
            while True:
                event, data = await self._events.get()
                turn.events.append((event, data))
                if until(event, data):
                    return turn


def _task_end_after_start(seen_start: bool = False) -> Callable[[str, dict], bool]:
    # connection_successful emits a bare task_end before anything runs: only a
    # task_end that follows a task_start closes a turn.
    started = seen_start

    def done(event: str, data: dict) -> bool:
        nonlocal started
        started = started or event == "task_start"
        return started and event == "task_end"

    return done
