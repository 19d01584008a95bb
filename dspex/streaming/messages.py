"""What a streamed program yields besides its final `Prediction`.

- `StreamResponse`: a piece of one output field of one predictor, as the LM writes
  it (``is_last_chunk`` on the field's last piece).
- `StatusMessage`: a line of progress ("Calling tool search..."), written by a
  `StatusMessageProvider` when a tool, module or LM call starts or ends.

The provider's hooks return a string to send, or None to stay quiet. The default
one speaks for tools only; subclass it to say more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex.utils.callback import BaseCallback

if TYPE_CHECKING:
    from dspex.streaming.streamify import StreamSession


@dataclass
class StreamResponse:
    """A chunk of the output field ``signature_field_name`` of predictor ``predict_name``."""

    predict_name: str
    signature_field_name: str
    chunk: str
    is_last_chunk: bool = False


@dataclass
class StatusMessage:
    """A progress message from the program's run."""

    message: str


class StatusMessageProvider:
    """Writes the status messages of a streamed run; override the hooks you want.

    Each hook returns the message text, or None for no message.
    """

    def tool_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        return f"Running tool {getattr(instance, 'name', type(instance).__name__)}..."

    def tool_end_status_message(self, outputs: Any) -> str | None:
        return "Tool finished; the LM continues with its result..."

    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        return None

    def module_end_status_message(self, outputs: Any) -> str | None:
        return None

    def lm_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        return None

    def lm_end_status_message(self, outputs: Any) -> str | None:
        return None


class StatusStreamingCallback(BaseCallback):
    """Turns the calls of a streamed run into status messages on its stream.

    Installed by `streamify` for the run only; a call outside a stream sends nothing.
    The stream is found in the call's context, so two runs streaming at once (with
    different providers) never see each other's messages.
    """

    def __init__(self, status_message_provider: StatusMessageProvider | None = None) -> None:
        self.status_message_provider = status_message_provider or StatusMessageProvider()

    def _send(self, message: str | None) -> None:
        if not message:
            return
        session = _active_session()
        if session is not None:
            session.emit_soon(StatusMessage(message))

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if getattr(instance, "name", None) == "finish":  # ReAct's built-in last step
            return
        self._send(self.status_message_provider.tool_start_status_message(instance, inputs))

    def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        if outputs == "Completed.":  # ReAct's finish tool
            return
        self._send(self.status_message_provider.tool_end_status_message(outputs))

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.status_message_provider.module_start_status_message(instance, inputs))

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._send(self.status_message_provider.module_end_status_message(outputs))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.status_message_provider.lm_start_status_message(instance, inputs))

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._send(self.status_message_provider.lm_end_status_message(outputs))


def _active_session() -> StreamSession | None:
    from dspex.clients.streaming import active_router
    from dspex.streaming.streamify import StreamSession

    router = active_router()
    return router if isinstance(router, StreamSession) else None


__all__ = ["StatusMessage", "StatusMessageProvider", "StatusStreamingCallback", "StreamResponse"]
