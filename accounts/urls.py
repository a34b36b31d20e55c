from django.urls import path

from . import apis

urlpatterns = [
    path("auth/register", apis.RegisterApi.as_view(), name="auth-register"),
    path("me", apis.MeApi.as_view(), name="me"),
    path("me/export", apis.MeExportApi.as_view(), name="me-export"),
    path("specialties", apis.SpecialtyListApi.as_view(), name="specialty-list"),
    path("doctors", apis.DoctorListApi.as_view(), name="doctor-list"),
    path("doctors/<int:doctor_id>", apis.DoctorDetailApi.as_view(), name="doctor-detail"),
    path("devices", apis.DeviceCreateApi.as_view(), name="device-create"),
    path("devices/<int:device_id>", apis.DeviceDeleteApi.as_view(), name="device-delete"),
    path("keys", apis.KeysPutApi.as_view(), name="keys-put"),
    path("keys/count", apis.KeyCountApi.as_view(), name="keys-count"),
    path("keys/<int:user_id>", apis.KeyBundleApi.as_view(), name="keys-bundle"),
]
