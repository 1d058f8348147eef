"""Checks Stripe-Signature headers with Stripe's own Python library.

Reads one JSON object per line on stdin: {"secret": "whsec_...", "signature": "t=...,v1=...",
"body": "..."}; prints one line per input: "ok <event type>" or "bad: <why>".
"""
import json
import sys

import stripe

for line in sys.stdin:
    if not line.strip():
        continue
    check = json.loads(line)
    try:
        event = stripe.Webhook.construct_event(check["body"], check["signature"], check["secret"], tolerance=300)
        print(f"ok {event['type']}")
    except Exception as e:  # stripe.error.SignatureVerificationError, ValueError
        print(f"bad: {e}")
    sys.stdout.flush()
