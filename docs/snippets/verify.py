import os

from standardwebhooks.webhooks import Webhook

webhook = Webhook(os.environ["HERALD_WEBHOOK_SECRET"])  # whsec_…


def handle(body: bytes, headers: dict) -> dict:
    """The event of a delivery, from the raw request body and its headers.

    Raises WebhookVerificationError when the delivery is forged, altered or
    more than 5 minutes old: answer 400 and do nothing else.
    """
    return webhook.verify(body, headers)
