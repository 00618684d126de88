"""Schemathesis hooks for the stateful phase only (see .ci/schemathesis).

An idempotent replay answers with the first response, as it must, even when the
resource it created has been deleted since; a chain that reused a key would
then report that resource as missing. The stateful phase follows what creates
hand out, so it sends no Idempotency-Key; the other phases cover the header.
"""

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.headers:
        for name in [n for n in case.headers if n.lower() == "idempotency-key"]:
            del case.headers[name]
