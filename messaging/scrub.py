"""Uploads rewritten without their metadata, in the request, with maintained tools.

- Images (JPEG, PNG, GIF, WebP; HEIC through pillow-heif): decoded and re-encoded by Pillow from
  the pixels alone. EXIF, GPS, XMP, IPTC, comments and text chunks are not copied; an embedded
  colour profile is applied (converted to sRGB) rather than carried, so no profile text travels.
  Orientation is applied to the pixels first. HEIC becomes JPEG: encoding HEVC (x265) took
  minutes for a 12-megapixel photo on a small server, JPEG half a second, and only Safari
  shows HEIC (the doctor's web console must show the photo).
- PDF: pikepdf (qpdf) drops the document information dictionary (``/Author``, ``/Producer``…),
  every XMP stream (``/Metadata`` on the catalogue, pages or images) and ``/PieceInfo``, and
  writes the file anew (earlier incremental revisions are not carried over).
- DOCX/XLSX: the package's property parts (``docProps/core.xml``, ``app.xml``, ``custom.xml``)
  are replaced by empty ones, embedded pictures go through the image path above, and the ZIP is
  written anew (no archive comment, fixed entry times).
- Plain text has no metadata container: stored as sent.

Video and audio are remuxed by ffmpeg in the Celery worker (``messaging/ffmpeg.py``).
Anything a tool cannot read is refused with an ``ApplicationError`` (422).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

import pikepdf
from PIL import Image, ImageCms, ImageOps, ImageSequence

from core.errors import ApplicationError

from . import filetypes
from .filetypes import OOXML_TYPES, Detected

_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/heic": "JPEG",
}
# What a converted upload is stored as.
_CONVERTED = {"image/heic": Detected("image", "image/jpeg", "jpg")}
# Image.info keys that describe the pixels (kept); everything else in ``info`` is dropped.
_PIXEL_INFO = ("transparency", "duration", "loop", "background")

# A DOCX/XLSX is a ZIP: bounds against archive bombs.
MAX_PACKAGE_MEMBERS = 5_000
MAX_PACKAGE_BYTES = 200 * 1024 * 1024
_EMPTY_PARTS = {
    "docProps/core.xml": (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
        b'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"/>'
    ),
    "docProps/app.xml": (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties"/>'
    ),
    "docProps/custom.xml": (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties"/>'
    ),
}
_PACKAGE_PICTURES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
_PACKAGE_PICTURES["webp"] = "image/webp"


@dataclass(frozen=True)
class Clean:
    data: bytes
    width: int | None = None
    height: int | None = None
    converted: Detected | None = None  # stored as another type (HEIC → JPEG)


def scrub(stream: IO[bytes], detected: Detected) -> Clean:
    """The upload without its metadata (images and documents; not video, audio or encrypted)."""
    stream.seek(0)
    if detected.category == "image":
        return scrub_image(stream, detected.content_type)
    if detected.content_type == "application/pdf":
        return scrub_pdf(stream)
    if detected.content_type in OOXML_TYPES:
        return scrub_ooxml(stream)
    if detected.content_type == "text/plain":
        return Clean(stream.read())
    raise ValueError(f"no in-process scrubber for {detected.content_type}")


# --- Images -----------------------------------------------------------------------------------
def _pixels_only(img: Image.Image) -> Image.Image:
    """A copy holding the pixels, the palette and what animation needs; the profile applied."""
    icc = img.info.get("icc_profile")
    clean = img.copy()
    clean.info = {key: img.info[key] for key in _PIXEL_INFO if key in img.info}
    if icc and clean.mode in ("RGB", "RGBA"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                clean, source, ImageCms.createProfile("sRGB"), outputMode=clean.mode
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            converted = None  # an unreadable profile: the pixels as they are, without it
        if converted is not None:
            converted.info = clean.info
            clean = converted
    return clean


def scrub_image(stream: IO[bytes], content_type: str) -> Clean:
    """Re-encode an image from its pixels alone. Refuse truncated images and pixel bombs."""
    fmt = _FORMATS[content_type]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                if img.width * img.height > filetypes.MAX_IMAGE_PIXELS:
                    raise ApplicationError("image_too_large", "The image has too many pixels.", status=413)
                img.load()
                out = io.BytesIO()
                if fmt == "GIF":
                    frames = [_pixels_only(frame) for frame in ImageSequence.Iterator(img)]
                    frames[0].save(
                        out,
                        format="GIF",
                        save_all=len(frames) > 1,
                        append_images=frames[1:],
                        comment=b"",
                    )
                    return Clean(out.getvalue(), img.width, img.height)
                # HEIC: libheif has already applied the container's rotation to the pixels.
                oriented = img if content_type == "image/heic" else ImageOps.exif_transpose(img)
                clean = _pixels_only(oriented)
                if fmt == "JPEG" and clean.mode not in ("RGB", "L"):
                    clean = clean.convert("RGB")
                if fmt == "PNG":
                    clean.save(out, format="PNG")
                else:
                    clean.save(out, format=fmt, quality=90, comment=b"")
                return Clean(out.getvalue(), clean.width, clean.height, _CONVERTED.get(content_type))
    except ApplicationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApplicationError("image_too_large", "The image has too many pixels.", status=413) from exc
    except (OSError, SyntaxError, ValueError, RuntimeError, EOFError) as exc:
        raise ApplicationError("corrupt_image", "The image is truncated or corrupt.", status=422) from exc


# --- PDF --------------------------------------------------------------------------------------
def scrub_pdf(stream: IO[bytes]) -> Clean:
    try:
        with pikepdf.open(cast(BinaryIO, stream)) as pdf:
            if "/Info" in pdf.trailer:
                del pdf.trailer["/Info"]
            for obj in pdf.objects:
                if isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
                    for key in ("/Metadata", "/PieceInfo"):
                        if key in obj:
                            del obj[key]
            out = io.BytesIO()
            pdf.save(out, fix_metadata_version=False, deterministic_id=True)
            return Clean(out.getvalue())
    except pikepdf.PasswordError as exc:
        raise ApplicationError(
            "document_encrypted", "Password-protected PDFs are not accepted; remove the password.", status=422
        ) from exc
    except (pikepdf.PdfError, OSError, ValueError, RuntimeError) as exc:
        raise ApplicationError(
            "corrupt_document", "The document is damaged or unreadable.", status=422
        ) from exc


# --- DOCX / XLSX ------------------------------------------------------------------------------
def scrub_ooxml(stream: IO[bytes]) -> Clean:
    damaged = ApplicationError("corrupt_document", "The document is damaged or unreadable.", status=422)
    out = io.BytesIO()
    try:
        with zipfile.ZipFile(stream) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
            members = [m for m in source.infolist() if not m.is_dir()]
            if len(members) > MAX_PACKAGE_MEMBERS or sum(m.file_size for m in members) > MAX_PACKAGE_BYTES:
                raise damaged
            for member in members:
                data = _EMPTY_PARTS.get(member.filename)
                if data is None:
                    data = source.read(member)  # at most file_size bytes; the CRC is checked
                    picture = _PACKAGE_PICTURES.get(member.filename.rsplit(".", 1)[-1].lower())
                    if picture is not None:
                        data = scrub_image(io.BytesIO(data), picture).data
                entry = zipfile.ZipInfo(member.filename, date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(entry, data)
    except ApplicationError as exc:
        if exc.code == "corrupt_document":
            raise
        raise damaged from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise damaged from exc
    return Clean(out.getvalue())
