"""Checks orderlog's webhook signatures with the Standard Webhooks reference library.

Reads one JSON object per line on stdin: {"secret": "whsec_...", "headers": {...},
"body": "..."}; prints one line per input: "ok" or "bad: <why>".
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

for line in sys.stdin:
    if not line.strip():
        continue
    check = json.loads(line)
    try:
        Webhook(check["secret"]).verify(check["body"], check["headers"])
        print("ok")
    except Exception as e:  # the library raises WebhookVerificationError
        print(f"bad: {e}")
    sys.stdout.flush()
