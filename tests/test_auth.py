"""The bearer token of function requests, as an OSCAR service sets it, through the real server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import Watchdog

TOKEN = "oscar-service-token-5f2c9e"


def start_guarded(start_watchdog: Watchdog.Factory, marker: Path, **settings: str) -> Watchdog:
    """Start the OSCAR mode with a function that leaves `marker` behind when it runs."""
    return start_watchdog(io_mode="oscar", fprocess=f"sh -c 'touch {marker}; echo ran'", **settings)


def test_token_accepted(start_watchdog: Watchdog.Factory, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    watchdog = start_guarded(start_watchdog, marker, auth_token=TOKEN)
    with watchdog.client() as client:
        response = client.post("/run/service", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.content == b"ran\n"
    assert marker.exists()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer", TOKEN],
)
def test_missing_or_wrong_token_gives_401(
    start_watchdog: Watchdog.Factory, tmp_path: Path, authorization: str | None
) -> None:
    marker = tmp_path / "ran"
    watchdog = start_guarded(start_watchdog, marker, auth_token=TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}
    with watchdog.client() as client:
        response = client.post("/run/service", content=b"QUJD", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert not marker.exists()


def test_health_and_metrics_stay_open(start_watchdog: Watchdog.Factory, tmp_path: Path) -> None:
    watchdog = start_guarded(start_watchdog, tmp_path / "ran", auth_token=TOKEN)
    with watchdog.client() as client:
        health = client.get("/_/health")
    metrics = httpx.get(f"http://127.0.0.1:{watchdog.metrics_port}/metrics", timeout=10)
    assert health.status_code == 200
    assert metrics.status_code == 200


def test_token_from_environment_variable(start_watchdog: Watchdog.Factory, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    watchdog = start_guarded(
        start_watchdog, marker, auth_token="env:OSCAR_SERVICE_TOKEN", OSCAR_SERVICE_TOKEN=TOKEN
    )
    with watchdog.client() as client:
        literal = client.post("/", headers={"Authorization": "Bearer env:OSCAR_SERVICE_TOKEN"})
        assert literal.status_code == 401
        assert not marker.exists()
        response = client.post("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert marker.exists()


def test_token_from_file(start_watchdog: Watchdog.Factory, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    watchdog = start_guarded(start_watchdog, marker, auth_token_file=str(token_file))
    with watchdog.client() as client:
        wrong = client.post("/", headers={"Authorization": "Bearer wrong-token"})
        assert wrong.status_code == 401
        response = client.post("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert marker.exists()


def test_token_never_logged(start_watchdog: Watchdog.Factory, tmp_path: Path) -> None:
    wrong_token = "wrong-token-7d41a0"
    watchdog = start_guarded(
        start_watchdog,
        tmp_path / "ran",
        auth_token="env:OSCAR_SERVICE_TOKEN",
        OSCAR_SERVICE_TOKEN=TOKEN,
        debug_headers="true",
        write_debug="true",
        LOG_LEVEL="DEBUG",
    )
    with watchdog.client() as client:
        accepted = client.post("/", headers={"Authorization": f"Bearer {TOKEN}"})
        rejected = client.post("/", headers={"Authorization": f"Bearer {wrong_token}"})
    assert accepted.status_code == 200
    assert rejected.status_code == 401
    watchdog.wait_log("POST / 401")
    log = watchdog.log()
    assert "authorization: ****" in log
    assert TOKEN not in log
    assert wrong_token not in log


def test_token_not_passed_to_function(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess="env", auth_token="s3cret-token")
    with watchdog.client() as client:
        response = client.post(
            "/", headers={"Authorization": "Bearer s3cret-token", "X-Other": "kept"}
        )
    assert response.status_code == 200
    assert "s3cret-token" not in response.text
    assert "Http_X_Other=kept" in response.text.splitlines()
