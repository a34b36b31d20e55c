"""Attachments on S3-compatible storage (moto's S3 server on loopback, django-storages for real)."""

import io
import uuid
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import requests
from PIL import Image
from rest_framework.test import APIClient

from messaging import services
from messaging.models import Attachment
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db
BUCKET = "healthchat-test"


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(settings, moto_url):
    requests.post(f"{moto_url}/moto-api/reset", timeout=5)
    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": moto_url,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "signature_version": "s3v4",
                "addressing_style": "path",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 300,
                "file_overwrite": False,
            },
        },
    }
    return client


def test_upload_presigned_download_and_delete_on_s3(s3, make_token, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    patient, doctor, conversation = pair()
    from messaging.tests.test_attachments import jpeg_with_exif

    out = io.BytesIO(jpeg_with_exif())
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)}"
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/attachments", {"file": SimpleUploadedFile("x.jpg", out.getvalue())}, format="multipart"
        )
    assert response.status_code == 201, response.content
    attachment = Attachment.objects.get(pk=response.json()["id"])
    key = attachment.file.name
    assert key.startswith(f"attachments/{patient.pk}/")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == attachment.size
    assert attachment.thumbnail.name.startswith(f"attachments/{patient.pk}/")
    services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=None,
        attachment_ids=[attachment.pk],
    )
    doctor_client = APIClient()
    doctor_client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)}"
    )
    link = doctor_client.get(f"/api/v1/attachments/{attachment.pk}").json()
    query = parse_qs(urlparse(link["url"]).query)
    assert query["X-Amz-Expires"] == ["300"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["response-content-type"] == ["image/jpeg"]
    assert urlparse(link["url"]).path == f"/{BUCKET}/{key}"
    fetched = requests.get(link["url"], timeout=5)
    assert fetched.status_code == 200
    assert b"SecretCam" not in fetched.content  # EXIF/GPS removed from what the member downloads
    assert not Image.open(io.BytesIO(fetched.content)).getexif()
    assert fetched.content == s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert link["thumbnail_url"]
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(user=patient, message_id=Attachment.objects.get(pk=attachment.pk).message_id)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == []
