"""`streamify`: run a program and yield its output as it is produced.

    stream = dspex.streamify(program, stream_listeners=[StreamListener("answer")])
    async for item in stream(question="..."):
        ...   # StreamResponse chunks, StatusMessages, and the Prediction last

How it works. Each call starts the program in a task of its own, inside a
`StreamSession` (`dspex.clients.streaming.routing_streams`). A predictor that a
listener follows asks the session for a sink; its LM requests then stream into
it (the same request pipeline, see `dspex.clients.streaming`), and each delta
goes through the predictor's listeners, which cut their field's text out. Status
messages come from a callback installed for the run. Everything the consumer
gets travels through one bounded `asyncio.Queue` (``buffer_size`` items), so a
slow consumer slows the producer down instead of piling items up: the LM's
stream is then read only as fast as it is consumed (TCP holds the rest back).

A consumer that stops early (``break`` then ``aclose()``, or leaving an
``aclosing`` block) cancels the program's task, which closes the LM's stream.

The program runs on the consumer's event loop when it is async (a dspex module);
a plain sync callable runs in a worker thread (`asyncify`), and its items cross
to the consumer's loop thread-safely, with the same bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import inspect
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any

from dspex.clients.streaming import DeltaSink, routing_streams
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings
from dspex.privacy import session as privacy
from dspex.streaming.listener import StreamListener, find_predictor_for_stream_listeners
from dspex.streaming.messages import StatusMessageProvider, StatusStreamingCallback, StreamResponse
from dspex.utils.asyncify import asyncify

DEFAULT_BUFFER_SIZE = 16
_END = object()


@dataclass
class StreamStats:
    """What a streamed run's queue saw, for tests and benchmarks."""

    bound: int
    items: int = 0
    max_queued: int = 0
    producer_waits: int = 0  # times the producer found the queue full and waited


class _PredictorSink(DeltaSink):
    """The sink of one predictor's answers: deltas through its listeners to the session."""

    def __init__(self, session: StreamSession, listeners: list[StreamListener]) -> None:
        super().__init__()
        self.session = session
        self.listeners = listeners
        # With redactors (dspex.privacy) the LM streams placeholders: the reader gets the
        # real values, as in the final prediction, one restorer per listened field.
        self._redaction = privacy.current_session()
        self._restorers: dict[int, privacy.RestoringStream] = {}

    def begin(self, adapter: Any = None) -> None:
        super().begin(adapter)
        adapter = adapter if adapter is not None else settings.adapter
        for listener in self.listeners:
            listener.begin(adapter)

    async def receive(self, text: str) -> None:
        for listener in self.listeners:
            response = listener.receive(text)
            if response is not None:
                await self._emit(listener, response)

    async def end(self) -> None:
        for listener in self.listeners:
            response = listener.finalize()
            if response is not None:
                await self._emit(listener, response)

    async def _emit(self, listener: StreamListener, response: StreamResponse) -> None:
        if self._redaction is None:
            await self.session.emit(response)
            return
        restorer = self._restorers.setdefault(id(listener), privacy.RestoringStream(self._redaction))
        chunk = restorer.feed(response.chunk, last=response.is_last_chunk)
        if chunk or response.is_last_chunk:
            await self.session.emit(dataclasses.replace(response, chunk=chunk))


class StreamSession:
    """One streamed run: the bounded queue to the consumer and the predictors' sinks."""

    def __init__(self, routes: dict[int, list[StreamListener]], buffer_size: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue(buffer_size)
        self.routes = routes
        self.stats = StreamStats(buffer_size)
        self.closed = False
        self._waiting = 0  # puts waiting for room (items that must keep their place)
        self._soon: set[asyncio.Task[None]] = set()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()

    # --- the producer's side ----------------------------------------------------------

    def sink_for(self, predictor: Any) -> DeltaSink | None:
        listeners = self.routes.get(id(predictor))
        return _PredictorSink(self, listeners) if listeners else None

    async def emit(self, item: Any) -> None:
        """Put ``item`` on the queue, waiting while it is full (from any loop or thread)."""
        if self.closed:
            raise asyncio.CancelledError("the stream's consumer has gone")
        if _running_loop() is self.loop:
            await self._put(item)
            return
        future = asyncio.run_coroutine_threadsafe(self._put(item), self.loop)
        self._track(future)
        await asyncio.wrap_future(future)

    def emit_soon(self, item: Any) -> None:
        """Put ``item`` on the queue without waiting (from sync code: a callback)."""
        if self.closed:
            return
        if _running_loop() is self.loop:
            if not self.queue.full() and not self._waiting:  # nothing queued up before it
                self.queue.put_nowait(item)
                self._count(item)
            else:
                task = self.loop.create_task(self._put(item))
                self._soon.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self._soon.discard)
            return
        self._track(asyncio.run_coroutine_threadsafe(self._put(item), self.loop))

    async def _put(self, item: Any) -> None:
        if self.queue.full():
            self.stats.producer_waits += 1
        self._waiting += 1
        try:
            await self.queue.put(item)
        finally:
            self._waiting -= 1
        self._count(item)

    def _count(self, item: Any) -> None:
        if item is not _END:
            self.stats.items += 1
        self.stats.max_queued = max(self.stats.max_queued, self.queue.qsize())

    def _track(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._untrack)

    def _untrack(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    # --- the consumer's side ----------------------------------------------------------

    def close(self) -> None:
        """The consumer is gone: producers waiting to put are woken with cancellation."""
        self.closed = True
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        for task in list(self._soon):
            task.cancel()


class StreamingProgram:
    """What `streamify` returns: call it like the program to get the stream of its output."""

    def __init__(
        self,
        program: Any,
        *,
        status_message_provider: StatusMessageProvider | None,
        stream_listeners: list[StreamListener],
        include_final_prediction_in_output_stream: bool,
        is_async_program: bool,
        async_streaming: bool,
        buffer_size: int,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.program = program
        self.stream_listeners = stream_listeners
        if stream_listeners:  # fills in each listener's predictor (or refuses)
            find_predictor_for_stream_listeners(program, stream_listeners)
        self.status_callback = StatusStreamingCallback(status_message_provider)
        self.include_final_prediction = include_final_prediction_in_output_stream
        self.async_streaming = async_streaming
        self.buffer_size = buffer_size
        self.last_stats: StreamStats | None = None
        self._call = _entry(program, is_async_program)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        stream = self.astream(*args, **kwargs)
        return stream if self.async_streaming else apply_sync_streaming(stream)

    async def astream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        # Listeners hold the state of one run: each call follows its fields with copies.
        listeners = [listener.fresh() for listener in self.stream_listeners]
        routes: dict[int, list[StreamListener]] = {}
        for listener in listeners:
            routes.setdefault(id(listener.predict), []).append(listener)
        session = StreamSession(routes, self.buffer_size)
        self.last_stats = session.stats
        producer = asyncio.create_task(self._produce(session, args, kwargs))
        try:
            while True:
                item = await session.queue.get()
                if item is _END:
                    break
                yield item
            prediction = producer.result()  # the program's own error, raised here
            for listener in listeners:  # tails no predictor end flushed
                tail = listener.finalize()
                if tail is not None:
                    yield tail
            if self._yield_prediction(listeners):
                yield prediction
        finally:
            session.close()
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self, session: StreamSession, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        callbacks = [*settings.callbacks]
        if not any(isinstance(c, StatusStreamingCallback) for c in callbacks):
            callbacks.append(self.status_callback)
        try:
            with settings.context(callbacks=callbacks), routing_streams(session):
                return await self._call(*args, **kwargs)
        finally:
            if not session.closed:
                await session.queue.put(_END)

    def _yield_prediction(self, listeners: list[StreamListener]) -> bool:
        if self.include_final_prediction or not listeners:
            return True
        # Without the prediction a consumer would get nothing of a field that never streamed.
        return any(listener.cache_hit for listener in listeners) or not any(
            listener.stream_start for listener in listeners
        )


def streamify(
    program: Any,
    status_message_provider: StatusMessageProvider | None = None,
    stream_listeners: list[StreamListener] | None = None,
    include_final_prediction_in_output_stream: bool = True,
    is_async_program: bool = False,
    async_streaming: bool = True,
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
) -> StreamingProgram:
    """Wrap ``program`` so a call yields its output as it is produced: `StreamResponse`
    chunks of the fields ``stream_listeners`` follow, `StatusMessage`s from
    ``status_message_provider``, and the final `Prediction` last.

    ``include_final_prediction_in_output_stream=False`` leaves the prediction out when
    listeners streamed their fields. ``is_async_program``: call ``program.acall``
    (dspex modules are always called that way; a plain sync callable otherwise runs in a
    worker thread). ``async_streaming=False`` returns a sync generator.
    ``buffer_size``: how many items may wait for the consumer before the program waits.
    """
    return StreamingProgram(
        program,
        status_message_provider=status_message_provider,
        stream_listeners=list(stream_listeners or []),
        include_final_prediction_in_output_stream=include_final_prediction_in_output_stream,
        is_async_program=is_async_program,
        async_streaming=async_streaming,
        buffer_size=buffer_size,
    )


def _entry(program: Any, is_async_program: bool) -> Callable[..., Any]:
    """How to call the program from the stream's task."""
    acall = getattr(program, "acall", None)
    if is_async_program and callable(acall):
        return acall  # type: ignore[no-any-return]
    if callable(acall) and _uses_module_call(program):
        return acall  # type: ignore[no-any-return]
    call_method = type(program).__dict__.get("__call__") if not inspect.isfunction(program) else None
    if inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(call_method):
        return program  # type: ignore[no-any-return]
    return asyncify(program)


def _uses_module_call(program: Any) -> bool:
    """A module whose ``__call__`` is dspex's own (so ``acall`` runs the same code); a user's
    class that writes its own ``__call__`` (as DSPy programs may) is called through it."""
    for cls in type(program).__mro__:
        if "__call__" in cls.__dict__:
            return cls.__module__ == "dspex" or cls.__module__.startswith("dspex.")
    return False


def apply_sync_streaming(async_generator: AsyncIterator[Any]) -> Generator[Any, None, None]:
    """The items of an async stream as a sync generator (the stream runs on an event loop
    in a thread of its own, with this thread's settings). Closing the generator early
    cancels the stream."""
    items: Queue[tuple[bool, Any]] = Queue(maxsize=DEFAULT_BUFFER_SIZE)
    done = object()
    running: dict[str, Any] = {}

    async def pump() -> None:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        try:
            async for item in async_generator:
                # A blocking put, off the loop: the stream keeps its own backpressure.
                await asyncio.to_thread(items.put, (True, item))
            items.put((True, done))
        except BaseException as error:  # handed to the consumer's thread
            items.put((False, error))
        finally:
            closer = getattr(async_generator, "aclose", None)
            if closer is not None:
                await closer()

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(asyncio.run, pump()), daemon=True, name="dspex-stream"
    )
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if not ok:
                raise item
            if item is done:
                break
            yield item
    finally:
        if thread.is_alive() and "task" in running:
            running["loop"].call_soon_threadsafe(running["task"].cancel)
        while thread.is_alive():  # drain, so a pump blocked on a full queue can finish
            try:
                items.get(timeout=0.05)
            except Empty:
                continue


async def streaming_response(streamer: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
    """A program's stream as server-sent events for an HTTP answer: ``data: {json}`` per
    chunk, status message and final prediction, then ``data: [DONE]``."""
    import json

    async for value in streamer:
        if isinstance(value, Prediction):
            data: dict[str, Any] = {"prediction": dict(value.items())}
        elif isinstance(value, StreamResponse):
            data = {"chunk": {"predict_name": value.predict_name, "field": value.signature_field_name,
                              "text": value.chunk, "is_last_chunk": value.is_last_chunk}}
        elif isinstance(value, str) and value.startswith("data:"):
            yield value
            continue
        elif hasattr(value, "message"):
            data = {"status": value.message}
        else:
            raise ValueError(f"cannot write a {type(value).__name__} as a server-sent event: {value!r:.200}")
        yield f"data: {json.dumps(data, default=str, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = [
    "StreamSession",
    "StreamStats",
    "StreamingProgram",
    "apply_sync_streaming",
    "streamify",
    "streaming_response",
]
