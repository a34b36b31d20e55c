"""The ffmpeg adapter: video and audio rewritten without metadata, run by the Celery worker.

``strip`` remuxes (``-c copy``: the audio and video bitstreams are not re-encoded) with
``-map_metadata -1`` for the file, every stream and every chapter, ``-map_chapters -1`` and
``-fflags +bitexact`` (no muxer version or creation time written). Only real video and audio
streams are kept (``0:V`` excludes cover pictures): data tracks (GoPro/iPhone location or
sensor tracks), subtitles and attachments go. AMR has no place for metadata but also no player
in browsers and carries whatever follows its frames, so it is transcoded to Opus in Ogg.

The demuxer is forced from the type detected from the bytes and only local files may be opened
(``-protocol_whitelist file``: no playlists or references that fetch other inputs). Each run
has a time limit (killed after ``MEDIA_PROCESSING_TIMEOUT_SECONDS``) and an output size cap.
Failures are ``MediaError`` with a code clients see.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

logger = logging.getLogger("healthchat.media")


@dataclass(frozen=True)
class Target:
    demuxer: str
    muxer: str
    content_type: str
    extension: str
    codec: tuple[str, ...] = ("-c", "copy")


TARGETS: dict[str, Target] = {
    "video/mp4": Target("mov", "mp4", "video/mp4", "mp4"),
    "video/quicktime": Target("mov", "mov", "video/quicktime", "mov"),
    "video/3gpp": Target("mov", "3gp", "video/3gpp", "3gp"),
    "video/3gpp2": Target("mov", "3g2", "video/3gpp2", "3g2"),
    "audio/mp4": Target("mov", "ipod", "audio/mp4", "m4a"),
    "video/webm": Target("matroska", "webm", "video/webm", "webm"),
    "audio/ogg": Target("ogg", "ogg", "audio/ogg", "ogg"),
    "audio/amr": Target("amr", "ogg", "audio/ogg", "ogg", ("-c:a", "libopus", "-b:a", "24k")),
}


class MediaError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Stripped:
    content_type: str
    extension: str
    duration: float | None
    width: int | None
    height: int | None


def available() -> bool:
    """Whether this process can strip video and audio (both binaries on the PATH)."""
    return bool(shutil.which(settings.MEDIA_FFMPEG_BINARY) and shutil.which(settings.MEDIA_FFPROBE_BINARY))


def _run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(  # noqa: S603 - an argument list from settings and temp paths, no shell
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=float(settings.MEDIA_PROCESSING_TIMEOUT_SECONDS),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # the child was killed
        raise MediaError("processing_timeout", "The file took too long to process.") from exc
    except OSError as exc:
        raise MediaError("media_processing_unavailable", "Video and audio cannot be processed now.") from exc


def strip(source: Path, target: Path, content_type: str) -> Stripped:
    """Write ``source`` (of the detected ``content_type``) to ``target`` without metadata."""
    spec = TARGETS[content_type]
    if not available():
        raise MediaError("media_processing_unavailable", "Video and audio cannot be processed now.")
    if source.stat().st_size > settings.MEDIA_PROCESSING_MAX_BYTES:
        raise MediaError("file_too_large", "The file is too large to process.")
    result = _run(
        [
            settings.MEDIA_FFMPEG_BINARY,
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-protocol_whitelist",
            "file",
            "-f",
            spec.demuxer,
            "-i",
            str(source),
            "-map",
            "0:V?",
            "-map",
            "0:a?",
            "-map_metadata",
            "-1",
            "-map_metadata:s",
            "-1",
            "-map_metadata:c",
            "-1",
            "-map_chapters",
            "-1",
            *spec.codec,
            "-fflags",
            "+bitexact",
            "-flags:v",
            "+bitexact",
            "-flags:a",
            "+bitexact",
            "-fs",
            str(settings.MEDIA_PROCESSING_MAX_BYTES),
            "-f",
            spec.muxer,
            str(target),
        ]
    )
    if result.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        # ffmpeg's message may quote the file's own tags: only the exit status is logged.
        logger.info("ffmpeg refused a %s upload (exit status %s)", content_type, result.returncode)
        raise MediaError("corrupt_media", "The video or audio file is damaged or unreadable.")
    return _probe(target, spec)


def _probe(path: Path, spec: Target) -> Stripped:
    result = _run(
        [
            settings.MEDIA_FFPROBE_BINARY,
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_type,width,height",
            "-of",
            "json",
            str(path),
        ]
    )
    try:
        info = json.loads(result.stdout or b"{}")
        streams = info.get("streams") or []
        if result.returncode != 0 or not streams:
            raise ValueError("no streams")
        duration = info.get("format", {}).get("duration")
        video: dict[str, Any] = next((s for s in streams if s.get("codec_type") == "video"), {})
    except (ValueError, TypeError, AttributeError) as exc:
        raise MediaError("corrupt_media", "The video or audio file is damaged or unreadable.") from exc
    return Stripped(
        content_type=spec.content_type,
        extension=spec.extension,
        duration=round(float(duration), 3) if duration not in (None, "N/A") else None,
        width=int(video["width"]) if video.get("width") else None,
        height=int(video["height"]) if video.get("height") else None,
    )
