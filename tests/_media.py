"""Small real media files made in memory for tests: a PNG (any size and colour), a
JPEG header, a WAV clip and a one-page PDF, without Pillow or any other library."""

from __future__ import annotations

import io
import struct
import wave
import zlib


def png_bytes(
    width: int = 2, height: int = 2, color: tuple[int, int, int] = (255, 0, 0), *, noise: bool = False
) -> bytes:
    """A valid RGB PNG of one colour, or (``noise``) of pseudo-random pixels, which do
    not compress: a 300x200 noisy PNG is about 180 kB."""
    if noise:
        state = sum(color) + 1
        pixels = bytearray()
        for _ in range(width * height * 3):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            pixels.append(state >> 16 & 0xFF)
        row = width * 3
        rows = b"".join(b"\x00" + bytes(pixels[y * row : (y + 1) * row]) for y in range(height))
    else:
        rows = b"".join(b"\x00" + bytes(color) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def wav_bytes(frames: int = 800, rate: int = 8000) -> bytes:
    """A short silent mono 16-bit WAV clip."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(rate)
        clip.writeframes(b"\x00\x00" * frames)
    return buffer.getvalue()


def pdf_bytes(text: str = "hello") -> bytes:
    """A minimal one-page PDF (enough for a reader to recognise it)."""
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
        + f"% {text}\n".encode()
        + b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
