"""Summarise a JSON list of orders read from stdin: totals per customer, largest order first.

Input:  [{"customer": "ada", "amount": 12.5}, ...]
Output: {"customers": [{"customer": "ada", "total": 12.5, "orders": 1}, ...], "total": 12.5}
A body that is not such a list exits with status 1 and a message on stderr, so the watchdog
returns 500 with that message.
"""

import json
import os
import sys


def summarise(orders: list[dict[str, object]]) -> dict[str, object]:
    totals: dict[str, list[float]] = {}
    for order in orders:
        customer = str(order["customer"])
        amount = float(order["amount"])  # type: ignore[arg-type]
        totals.setdefault(customer, []).append(amount)
    customers = [
        {"customer": name, "total": round(sum(amounts), 2), "orders": len(amounts)}
        for name, amounts in totals.items()
    ]
    customers.sort(key=lambda entry: (-entry["total"], entry["customer"]))  # type: ignore[operator]
    return {
        "customers": customers,
        "total": round(sum(sum(amounts) for amounts in totals.values()), 2),
        "method": os.environ.get("Http_Method", ""),  # noqa: SIM112 - the watchdog sets this name
    }


def main() -> int:
    try:
        orders = json.load(sys.stdin)
        if not isinstance(orders, list):
            raise ValueError("expected a JSON list of orders")
        result = summarise(orders)
    except (ValueError, KeyError, TypeError) as error:
        print(f"invalid input: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
