"""Reports the official SDK's verdict on each webhook delivery it is given.

Reads a JSON list of {"secret", "headers", "body"} on stdin and prints a JSON
list of "accept" or "reject", one per delivery, in order.
"""

import json
import sys

from finch import Finch


def verdict(client: Finch, case: dict) -> str:
    try:
        client.webhooks.verify_signature(case["body"], case["headers"], secret=case["secret"])
    except Exception:  # the SDK signals every refusal with an exception
        return "reject"
    return "accept"


def main() -> None:
    cases = json.load(sys.stdin)
    client = Finch(access_token="unused")
    json.dump([verdict(client, case) for case in cases], sys.stdout)


if __name__ == "__main__":
    main()
