"""What kind of file some bytes are, from their first bytes (magic numbers).

Used by `dspex.Image`/`Audio`/`File` to refuse content that is not what it is
given as, and by the simulated LM to check what it is sent, the way a provider
does. Knows the formats the chat APIs take, plus a few that are commonly sent
by mistake (PDF, ZIP, gzip, plain text) so errors can say what was given.
"""

from __future__ import annotations


def sniff(data: bytes, *, text: bool = True) -> str | None:
    """The media type ``data`` starts like, or None when it is not one dspex knows.

    Images: PNG, JPEG, GIF, WebP, BMP, TIFF, ICO, HEIC, AVIF. Audio: WAV, MP3, FLAC,
    Ogg, WebM, M4A. Documents: PDF, ZIP; with ``text``, bytes that decode as UTF-8
    are ``text/plain``.
    """
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"BM") and len(head) >= 26 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "image/x-icon"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] in (0xFB, 0xF3, 0xF2)):
        return "audio/mpeg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "audio/webm"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if text and _is_text(data[:4096]):
        return "text/plain"
    return None


def _is_text(sample: bytes) -> bool:
    if not sample or b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A sample cut inside a multi-byte character is still text.
        return exc.start >= len(sample) - 3
    return True
