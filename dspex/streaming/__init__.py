"""Streaming a program's output as it is produced (`streamify`): field chunks from
`StreamListener`s, `StatusMessage`s, and the final prediction. See
`dspex.streaming.streamify` for how it works."""

from dspex.streaming.listener import StreamListener, find_predictor_for_stream_listeners
from dspex.streaming.messages import (
    StatusMessage,
    StatusMessageProvider,
    StatusStreamingCallback,
    StreamResponse,
)
from dspex.streaming.streamify import (
    StreamingProgram,
    StreamSession,
    StreamStats,
    apply_sync_streaming,
    streamify,
    streaming_response,
)

__all__ = [
    "StatusMessage",
    "StatusMessageProvider",
    "StatusStreamingCallback",
    "StreamListener",
    "StreamResponse",
    "StreamSession",
    "StreamStats",
    "StreamingProgram",
    "apply_sync_streaming",
    "find_predictor_for_stream_listeners",
    "streamify",
    "streaming_response",
]
