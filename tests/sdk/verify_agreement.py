"""Reports the official SDK's verdict on each webhook delivery it is given.

Reads a JSON list of {"name", "secret", "headers", "body"} on stdin and prints
a JSON list of {"name", "verdict"}, one per delivery, in order, where verdict
is "accept" or "reject". Only the SDK's own refusal (ValueError) counts as
"reject": any other exception is a broken SDK or script, and fails the run.
"""

import json
import sys

from finch import Finch


def verdict(client: Finch, case: dict) -> str:
    try:
        client.webhooks.verify_signature(case["body"], case["headers"], secret=case["secret"])
    except ValueError:
        return "reject"
    return "accept"


def main() -> None:
    cases = json.load(sys.stdin)
    client = Finch(access_token="unused")
    json.dump([{"name": case["name"], "verdict": verdict(client, case)} for case in cases], sys.stdout)


if __name__ == "__main__":
    main()
