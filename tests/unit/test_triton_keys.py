"""The Triton keys on the client side: a refused call becomes PermissionDenied naming the setting
that holds the missing key (never transient), the service-key plugin puts the header on every call
without showing the key, and the settings keep the key out of their dict. Real tritonclient objects;
no server (tests/integration/test_triton_service_key.py runs tritonserver)."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from bobench.config import Settings, load_settings
from bobench.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from bobench.serving.triton_access import ServiceKey, service_client
from bobench.triton_errors import to_bobench_error


def _restricted(header: str) -> InferenceServerException:
    return InferenceServerException(
        f"This protocol is restricted, expecting header '{header}'", status="StatusCode.UNAVAILABLE"
    )


@pytest.mark.parametrize(
    ("header", "setting"),
    [
        ("triton-grpc-protocol-bobench-service-key", "triton_service_key (BOBENCH_TRITON_SERVICE_KEY)"),
        ("triton-grpc-protocol-bobench-admin-key", "triton_admin_key (BOBENCH_TRITON_ADMIN_KEY)"),
        ("bobench-service-key", "triton_service_key"),  # the HTTP frontend names the bare header
    ],
)
def test_a_refused_call_is_permission_denied_naming_the_setting(header, setting):
    error = to_bobench_error(_restricted(header), "Triton model 'toy' at 127.0.0.1:1")
    assert isinstance(error, PermissionDenied) and not isinstance(error, Unavailable)
    assert setting in str(error) and "Triton model 'toy' at 127.0.0.1:1" in str(error)
    assert "UNAVAILABLE" in str(error)  # Triton's own status stays visible


def test_an_unknown_header_is_named_as_triton_said_it():
    error = to_bobench_error(_restricted("x-other"), "Triton at h:1")
    assert isinstance(error, PermissionDenied) and "'x-other'" in str(error)


def test_other_triton_errors_keep_their_mapping():
    unknown = InferenceServerException(
        "Request for unknown model: 'nope' is not found", status="StatusCode.INVALID_ARGUMENT"
    )
    assert isinstance(to_bobench_error(unknown, "w"), NotFound)
    down = InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")
    assert isinstance(to_bobench_error(down, "w"), Unavailable)


def test_the_service_key_plugin_adds_the_header_and_hides_the_key():
    from tritonclient._request import Request

    plugin = ServiceKey("svc-secret-1")
    request = Request({"other": "1"})
    plugin(request)
    assert request.headers == {"other": "1", "triton-grpc-protocol-bobench-service-key": "svc-secret-1"}
    assert "svc-secret-1" not in repr(plugin)
    client = service_client("127.0.0.1:1", "svc-secret-1")  # no call made: channels connect lazily
    try:
        assert client.plugin() is not None
        assert "svc-secret-1" not in repr(client.plugin())
    finally:
        client.close()
    bare = service_client("127.0.0.1:1")
    try:
        assert bare.plugin() is None
    finally:
        bare.close()


def test_the_service_key_setting_comes_from_the_environment_and_stays_out_of_to_dict(monkeypatch):
    monkeypatch.setenv("BOBENCH_TRITON_SERVICE_KEY", "svc-from-env-1234")
    settings = load_settings()
    assert settings.triton_service_key == "svc-from-env-1234"
    assert "triton_service_key" not in settings.to_dict()
    assert "svc-from-env-1234" not in str(settings.to_dict())
    assert "triton_service_key" in Settings.__dataclass_fields__


def test_a_placeholder_service_key_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("BOBENCH_TRITON_SERVICE_KEY", "CHANGE_ME")
    with pytest.raises(InvalidArgument, match="BOBENCH_TRITON_SERVICE_KEY"):
        load_settings()
