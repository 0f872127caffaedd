"""The example functions, run through the real server with real input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.helpers import Watchdog

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_wordcount_counts_body(start_watchdog: Watchdog.Factory) -> None:
    watchdog = start_watchdog(fprocess=str(EXAMPLES / "wordcount" / "handler.sh"))
    with watchdog.client() as client:
        response = client.post("/", content=b"one two three\nfour five\n")
    assert response.status_code == 200
    assert response.json() == {"lines": 2, "words": 5, "bytes": 24}


def test_json_transform_summarises_orders(start_watchdog: Watchdog.Factory) -> None:
    handler = EXAMPLES / "json-transform" / "handler.py"
    watchdog = start_watchdog(fprocess=f"{sys.executable} {handler}")
    orders = [
        {"customer": "ada", "amount": 12.5},
        {"customer": "bob", "amount": 30},
        {"customer": "ada", "amount": 20},
    ]
    with watchdog.client() as client:
        response = client.post(
            "/orders", content=json.dumps(orders), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "customers": [
            {"customer": "ada", "total": 32.5, "orders": 2},
            {"customer": "bob", "total": 30.0, "orders": 1},
        ],
        "total": 62.5,
        "method": "POST",
    }


def test_json_transform_invalid_input_gives_500(start_watchdog: Watchdog.Factory) -> None:
    handler = EXAMPLES / "json-transform" / "handler.py"
    watchdog = start_watchdog(fprocess=f"{sys.executable} {handler}")
    with watchdog.client() as client:
        response = client.post("/", content=b'{"not": "a list"}')
    assert response.status_code == 500
    assert response.text.splitlines()[0] == "exit status 1"
    assert "invalid input: expected a JSON list of orders" in response.text
