"""File type detection from the bytes (never the name or the client's header), the allow-list,
safe display names and thumbnails. Metadata is stripped by ``scrub`` (images, documents, in the
request) and ``ffmpeg`` (video and audio, in the Celery worker)."""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

import pillow_heif
from PIL import Image

from core.errors import ApplicationError

# Decompression bombs: refuse images above this many pixels (Pillow warns at 1x, errors at 2x).
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
pillow_heif.register_heif_opener()  # HEIC through Pillow (scrubbing, thumbnails)
THUMBNAIL_SIZE = (320, 320)


@dataclass(frozen=True)
class Detected:
    category: str  # image | video | audio | document | encrypted
    content_type: str
    extension: str


# Uploads already encrypted by the client (end-to-end encrypted conversations): never sniffed.
ENCRYPTED = Detected("encrypted", "application/octet-stream", "bin")

_FTYP_BRANDS: dict[bytes, Detected] = {
    b"heic": Detected("image", "image/heic", "heic"),
    b"heix": Detected("image", "image/heic", "heic"),
    b"mif1": Detected("image", "image/heic", "heic"),
    b"msf1": Detected("image", "image/heic", "heic"),
    b"M4A ": Detected("audio", "audio/mp4", "m4a"),
    b"M4B ": Detected("audio", "audio/mp4", "m4a"),
    b"qt  ": Detected("video", "video/quicktime", "mov"),
    b"3gp4": Detected("video", "video/3gpp", "3gp"),
    b"3gp5": Detected("video", "video/3gpp", "3gp"),
    b"3gp6": Detected("video", "video/3gpp", "3gp"),
    b"3g2a": Detected("video", "video/3gpp2", "3g2"),
}
_MP4_BRANDS = {
    b"isom",
    b"iso2",
    b"iso4",
    b"iso5",
    b"iso6",
    b"mp41",
    b"mp42",
    b"avc1",
    b"M4V ",
    b"dash",
    b"MSNV",
}


def _ftyp(head: bytes) -> Detected | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in _FTYP_BRANDS:
        return _FTYP_BRANDS[brand]
    if brand in _MP4_BRANDS:
        return Detected("video", "video/mp4", "mp4")
    return None


_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
OOXML_TYPES = (_DOCX, _XLSX)


def _office(stream: IO[bytes]) -> Detected | None:
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if "[Content_Types].xml" not in names:
        return None
    if any(n.startswith("word/") for n in names):
        return Detected("document", _DOCX, "docx")
    if any(n.startswith("xl/") for n in names):
        return Detected("document", _XLSX, "xlsx")
    return None


_MARKUP = re.compile(rb"<\s*(html|script|svg|iframe|body|head|meta|object|embed|!doctype)", re.IGNORECASE)


def _plain_text(stream: IO[bytes]) -> Detected | None:
    stream.seek(0)
    sample = stream.read(1 << 20)
    if b"\x00" in sample or _MARKUP.search(sample):
        return None
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # a multi-byte character cut at the sample's end is fine
            return None
    return Detected("document", "text/plain", "txt")


def detect(stream: IO[bytes]) -> Detected:
    """The type of ``stream`` from its bytes, if it is on the allow-list."""
    stream.seek(0)
    head = stream.read(64)
    detected: Detected | None = None
    if head.startswith(b"\xff\xd8\xff"):
        detected = Detected("image", "image/jpeg", "jpg")
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        detected = Detected("image", "image/png", "png")
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        detected = Detected("image", "image/gif", "gif")
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        detected = Detected("image", "image/webp", "webp")
    elif head.startswith(b"\x1aE\xdf\xa3"):
        detected = Detected("video", "video/webm", "webm")
    elif head.startswith(b"OggS"):
        detected = Detected("audio", "audio/ogg", "ogg")
    elif head.startswith(b"#!AMR"):
        detected = Detected("audio", "audio/amr", "amr")
    elif head.startswith(b"%PDF-"):
        detected = Detected("document", "application/pdf", "pdf")
    elif head.startswith(b"PK\x03\x04"):
        detected = _office(stream)
    else:
        detected = _ftyp(head) or _plain_text(stream)
    stream.seek(0)
    if detected is None:
        raise ApplicationError(
            "unsupported_file_type",
            "This kind of file is not accepted (images, videos, voice notes, PDF, DOCX, XLSX, TXT).",
            status=415,
        )
    return detected


_UNSAFE_NAME = re.compile(r"[^\w.\- ()]+", re.UNICODE)


def sanitize_filename(name: str, extension: str) -> str:
    """A display name without paths, control characters or a misleading extension."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    base = unicodedata.normalize("NFKC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    stem = base.rsplit(".", 1)[0] if "." in base else base
    stem = _UNSAFE_NAME.sub("_", stem).strip(" ._")[:100] or "file"
    return f"{stem}.{extension}"


def thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        img.thumbnail(THUMBNAIL_SIZE)
        out = io.BytesIO()
        img.convert("RGB").save(out, format="JPEG", quality=80)
        return out.getvalue()
