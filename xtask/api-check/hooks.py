"""Schemathesis hooks for `cargo xtask api-check`.

One rule of the API is about time, which no JSON Schema can state: an
`expires_at` that a request sets must be in the future (SPEC §6). A
generator that reads only the document writes any RFC 3339 timestamp, and
a past one is rightly refused with 400, so every generated body that sets
a well-formed `expires_at` in the past has it moved a year past now before
it is sent. Bodies that break the schema elsewhere stay broken, and an
`expires_at` that is not a timestamp at all is left alone, so the negative
checks still see it refused.
"""

from datetime import datetime, timedelta, timezone

import schemathesis


def _in_the_past(value):
    if not isinstance(value, str):
        return False
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    return moment <= datetime.now(timezone.utc) + timedelta(minutes=1)


# `before_call` rather than `map_body`: it runs for every request of every
# phase (the coverage phase's bodies never pass `map_body`), and
# schemathesis then revalidates the case, so it stays rightly positive or
# negative.
@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict) and _in_the_past(body.get("expires_at")):
        future = datetime.now(timezone.utc) + timedelta(days=365)
        body["expires_at"] = future.strftime("%Y-%m-%dT%H:%M:%SZ")
