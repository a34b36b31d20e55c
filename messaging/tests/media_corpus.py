"""Real files of every accepted upload type, each carrying the metadata a phone, a camera or an
office suite leaves in it (location, author, device, software, free-text comments), made with
the tools that make such files: Pillow, pillow-heif, pikepdf and ffmpeg.

Every planted value contains one of ``SECRETS``, so a test can look for them in what a
recipient downloads, and ``exiftool`` (an outside judge) reads the files back.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pikepdf
import pillow_heif
from PIL import Image, ImageDraw, PngImagePlugin

# Planted in every file; none of them may survive. (Coordinates: 51.5033 N, 0.1196 W.)
SECRETS = ("SecretPhone", "PatientName", "HomeAddress", "SecretApp", "51.5033", "51 deg 30")

# Tag names exiftool may not report in anything a recipient downloads (matched on the name
# after ``Group:``, case-insensitive, as substrings).
FORBIDDEN_TAGS = (
    "gps",
    "location",
    "author",
    "artist",
    "creator",
    "comment",
    "title",
    "make",
    "model",
    "software",
    "description",
    "producer",
    "copyright",
    "keywords",
    "subject",
    "lastmodifiedby",
    "company",
    "serialnumber",
    "lensmodel",
    "ownername",
    "encoder",
    "handlername",
    "performer",
    "datetimeoriginal",
)
# Tags named like forbidden ones that describe the container, not the person or the device.
ALLOWED_TAGS = {"HandlerDescription", "CompressorID", "ProfileDescription"}
# What the server's own ffmpeg writes (no version, no date: ``-fflags +bitexact``): the tool that
# re-muxed the file, not the uploader's device or software.
SERVER_VALUES = {"Lavf", "Lavc libopus", "ffmpeg"}
# Whole groups that are metadata by nature.
FORBIDDEN_GROUPS = ("GPS", "XMP", "IPTC", "MakerNotes", "ICC_Profile", "UserData", "ItemList", "Keys")

PLACE = "+51.5033-000.1196/"


@dataclass(frozen=True)
class Sample:
    name: str  # the upload's file name
    data: bytes
    content_type: str  # what the server detects
    category: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None


def exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretPhone Inc."  # Make
    exif[0x0110] = "SecretPhone 15"  # Model
    exif[0x0131] = "SecretApp 2.1"  # Software
    exif[0x013B] = "PatientName"  # Artist
    exif[0x010E] = "HomeAddress, 10 Downing St"  # ImageDescription
    exif[0x8298] = "PatientName 2026"  # Copyright
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (51.0, 30.0, 12.0)
    gps[3] = "W"
    gps[4] = (0.0, 7.0, 10.0)
    return exif.tobytes()


XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
    ' xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="51,30.2N"'
    ' exif:GPSLongitude="0,7.1W"><dc:creator><rdf:Seq><rdf:li>PatientName</rdf:li></rdf:Seq>'
    "</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
)


def _picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    img = Image.new("RGB", size, (200, 40, 40))
    ImageDraw.Draw(img).rectangle((8, 8, 40, 30), fill=(20, 120, 220))
    return img.convert(mode)


def jpeg() -> Sample:
    out = io.BytesIO()
    _picture().save(
        out, format="JPEG", exif=exif_bytes(), comment=b"HomeAddress: ring twice", xmp=XMP.encode()
    )
    return Sample("photo.jpg", out.getvalue(), "image/jpeg", "image", 64, 48)


def png() -> Sample:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "PatientName")
    info.add_text("Comment", "HomeAddress")
    info.add_itxt("Description", "taken at HomeAddress", lang="en")
    info.add_itxt("XML:com.adobe.xmp", XMP)
    out = io.BytesIO()
    _picture(mode="RGBA").save(out, format="PNG", pnginfo=info, exif=exif_bytes())
    return Sample("scan.png", out.getvalue(), "image/png", "image", 64, 48)


def gif() -> Sample:
    frames = [_picture(mode="P"), _picture().rotate(180).convert("P")]
    out = io.BytesIO()
    frames[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=200,
        loop=0,
        comment=b"PatientName at HomeAddress",
    )
    return Sample("clip.gif", out.getvalue(), "image/gif", "image", 64, 48)


def webp() -> Sample:
    out = io.BytesIO()
    _picture().save(out, format="WEBP", exif=exif_bytes(), xmp=XMP.encode(), quality=90)
    return Sample("sticker.webp", out.getvalue(), "image/webp", "image", 64, 48)


def heic() -> Sample:
    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    _picture().save(out, format="HEIF", exif=exif_bytes(), xmp=XMP.encode(), quality=80)
    return Sample("IMG_0001.heic", out.getvalue(), "image/heic", "image", 64, 48)


def pdf() -> Sample:
    document = pikepdf.new()
    document.add_blank_page(page_size=(200, 100))
    with document.open_metadata(set_pikepdf_as_editor=False) as meta:
        meta["dc:creator"] = ["PatientName"]
        meta["dc:description"] = "HomeAddress"
        meta["xmp:CreatorTool"] = "SecretApp 2.1"
    document.docinfo["/Author"] = "PatientName"
    document.docinfo["/Title"] = "Scan at HomeAddress"
    document.docinfo["/Creator"] = "SecretApp 2.1"
    document.docinfo["/Producer"] = "SecretPhone PDF"
    document.docinfo["/Subject"] = "HomeAddress"
    document.docinfo["/Keywords"] = "PatientName"
    out = io.BytesIO()
    document.save(out)
    return Sample("lab results.pdf", out.getvalue(), "application/pdf", "document")


_CORE = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"'
    ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    "<dc:title>Notes from HomeAddress</dc:title><dc:creator>PatientName</dc:creator>"
    "<cp:lastModifiedBy>PatientName</cp:lastModifiedBy><dc:description>HomeAddress</dc:description>"
    '<dcterms:created xsi:type="dcterms:W3CDTF">2026-11-01T10:00:00Z</dcterms:created>'
    "</cp:coreProperties>"
)
_APP = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
    "<Application>SecretApp 2.1</Application><Company>PatientName Ltd</Company></Properties>"
)
_CUSTOM = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties"'
    ' xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
    '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="2" name="Home">'
    "<vt:lpwstr>HomeAddress</vt:lpwstr></property></Properties>"
)


def _ooxml(main_dir: str, main_part: str, main_xml: str, main_type: str) -> bytes:
    photo = io.BytesIO()
    _picture().save(photo, format="JPEG", exif=exif_bytes(), comment=b"PatientName")
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Default Extension="jpeg" ContentType="image/jpeg"/>'
        f'<Override PartName="/{main_dir}/{main_part}" ContentType="{main_type}"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        '<Override PartName="/docProps/app.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>'
        '<Override PartName="/docProps/custom.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.custom-properties+xml"/>'
        "</Types>"
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        f'relationships/officeDocument" Target="{main_dir}/{main_part}"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/'
        'metadata/core-properties" Target="docProps/core.xml"/>'
        '<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/extended-properties" Target="docProps/app.xml"/>'
        '<Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/custom-properties" Target="docProps/custom.xml"/>'
        "</Relationships>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.comment = b"PatientName"
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("_rels/.rels", rels)
        archive.writestr(f"{main_dir}/{main_part}", main_xml)
        archive.writestr(f"{main_dir}/media/image1.jpeg", photo.getvalue())
        archive.writestr("docProps/core.xml", _CORE)
        archive.writestr("docProps/app.xml", _APP)
        archive.writestr("docProps/custom.xml", _CUSTOM)
    return out.getvalue()


def docx() -> Sample:
    body = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>Blood pressure 120/80</w:t></w:r></w:p></w:body></w:document>"
    )
    kind = "application/vnd.openxmlformats-officedocument.wordprocessingml"
    data = _ooxml("word", "document.xml", body, f"{kind}.document.main+xml")
    return Sample("notes.docx", data, f"{kind}.document", "document")


def xlsx() -> Sample:
    book = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheets/></workbook>'
    )
    kind = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    data = _ooxml("xl", "workbook.xml", book, f"{kind}.sheet.main+xml")
    return Sample("glucose.xlsx", data, f"{kind}.sheet", "document")


def text() -> Sample:
    return Sample("notes.txt", "Blood pressure 120/80 — fine.\n".encode(), "text/plain", "document")


_TAGS = [
    "-metadata",
    "title=Visit at HomeAddress",
    "-metadata",
    "artist=PatientName",
    "-metadata",
    "author=PatientName",
    "-metadata",
    "comment=HomeAddress",
    "-metadata",
    f"location={PLACE}",
    "-metadata",
    "make=SecretPhone",
    "-metadata",
    "model=SecretPhone 15",
    "-metadata",
    "encoder=SecretApp 2.1",
    "-metadata:s:0",
    "title=PatientName stream",
    "-metadata:s:0",
    "handler_name=SecretApp handler",
]


def _ffmpeg(args: list[str], suffix: str, *, chapter: bool = False) -> bytes:
    """``ffmpeg`` with the inputs and options in ``args``; ``chapter``: plus a chapter titled with
    a secret (from an ffmetadata file, the last input)."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"out.{suffix}"
        extra: list[str] = []
        if chapter:
            chapters = Path(folder) / "chapters.txt"
            chapters.write_text(
                ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=PatientName chapter\n"
            )
            extra = ["-f", "ffmetadata", "-i", str(chapters), "-map_chapters", str(args.count("-i"))]
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-y",
                *args[: _after_inputs(args)],
                *extra,
                *args[_after_inputs(args) :],
                str(target),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return target.read_bytes()


def _after_inputs(args: list[str]) -> int:
    """The index just after the last ``-i <input>`` pair."""
    return max(i for i, arg in enumerate(args) if arg == "-i") + 2


_VIDEO_IN = [
    "-f",
    "lavfi",
    "-i",
    "testsrc=size=176x144:rate=10:duration=2",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:duration=2",
]
_AUDIO_IN = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2"]


def mp4() -> Sample:
    data = _ffmpeg(
        [*_VIDEO_IN, *_TAGS, "-c:v", "mpeg4", "-c:a", "aac", "-movflags", "+use_metadata_tags", "-f", "mp4"],
        "mp4",
        chapter=True,
    )
    return Sample("VID_0001.mp4", data, "video/mp4", "video", 176, 144, 2.0)


def mov() -> Sample:
    data = _ffmpeg([*_VIDEO_IN, *_TAGS, "-c:v", "mpeg4", "-c:a", "aac", "-f", "mov"], "mov")
    return Sample("IMG_0002.MOV", data, "video/quicktime", "video", 176, 144, 2.0)


def threegp() -> Sample:
    data = _ffmpeg([*_VIDEO_IN, *_TAGS, "-c:v", "mpeg4", "-c:a", "aac", "-f", "3gp"], "3gp")
    return Sample("video.3gp", data, "video/3gpp", "video", 176, 144, 2.0)


def threeg2() -> Sample:
    data = _ffmpeg([*_VIDEO_IN, *_TAGS, "-c:v", "mpeg4", "-c:a", "aac", "-f", "3g2"], "3g2")
    return Sample("video.3g2", data, "video/3gpp2", "video", 176, 144, 2.0)


def webm() -> Sample:
    data = _ffmpeg([*_VIDEO_IN, *_TAGS, "-c:v", "libvpx", "-c:a", "libopus", "-f", "webm"], "webm")
    return Sample("clip.webm", data, "video/webm", "video", 176, 144, 2.0)


def m4a() -> Sample:
    data = _ffmpeg([*_AUDIO_IN, *_TAGS, "-c:a", "aac", "-f", "ipod"], "m4a", chapter=True)
    return Sample("voice.m4a", data, "audio/mp4", "audio", duration=2.0)


def ogg() -> Sample:
    data = _ffmpeg([*_AUDIO_IN, *_TAGS, "-c:a", "libopus", "-f", "ogg"], "ogg", chapter=True)
    return Sample("voice.ogg", data, "audio/ogg", "audio", duration=2.0)


def amr() -> Sample:
    """AMR-NB (Debian's ffmpeg has no AMR encoder): 100 frames of 20 ms at 12.2 kbit/s, then
    free text appended after the last frame, where an AMR file has no place for metadata."""
    frames = b"".join(b"\x3c" + bytes([(i * 7 + j) % 256 for j in range(31)]) for i in range(100))
    return Sample(
        "voice.amr", b"#!AMR\n" + frames + b"PatientName HomeAddress", "audio/amr", "audio", duration=2.0
    )


def corpus() -> list[Sample]:
    """One sample of every accepted (non-encrypted) type in ``messaging/filetypes.py``."""
    return [
        jpeg(),
        png(),
        gif(),
        webp(),
        heic(),
        pdf(),
        docx(),
        xlsx(),
        text(),
        mp4(),
        mov(),
        threegp(),
        threeg2(),
        webm(),
        m4a(),
        ogg(),
        amr(),
    ]


# --- The outside judge ------------------------------------------------------------------------
def exiftool(data: bytes, suffix: str) -> dict[str, Any]:
    """``exiftool -j -G1 -a`` on the bytes: every tag, duplicates included, with its group."""
    assert shutil.which("exiftool"), "exiftool is missing: apt-get install libimage-exiftool-perl"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"download.{suffix}"
        path.write_bytes(data)
        result = subprocess.run(
            ["exiftool", "-j", "-G1", "-a", "-ee", "-api", "LargeFileSupport=1", str(path)],
            check=False,  # exit status 1 for a file it cannot read: reported as a problem below
            capture_output=True,
            timeout=60,
        )
    tags: dict[str, Any] = json.loads(result.stdout)[0]
    return tags


def metadata_problems(data: bytes, suffix: str) -> list[str]:
    """What ``exiftool`` still finds (and what the raw bytes still hold) of the planted metadata."""
    problems = [f"bytes contain {secret!r}" for secret in SECRETS if secret.encode() in data]
    for key, value in exiftool(data, suffix).items():
        group, _, name = key.rpartition(":")
        if key == "ExifTool:Error":
            problems.append(f"exiftool cannot read it: {value}")
        if group in ("System", "ExifTool", "File") or name == "SourceFile":
            continue
        if any(secret in str(value) for secret in SECRETS):
            problems.append(f"{key}={value!r}")
        elif group.split(":")[0] in FORBIDDEN_GROUPS:
            problems.append(f"{key}={value!r} (group)")
        elif (
            name not in ALLOWED_TAGS
            and str(value) not in SERVER_VALUES
            and any(word in name.lower() for word in FORBIDDEN_TAGS)
        ):
            problems.append(f"{key}={value!r}")
    return problems
