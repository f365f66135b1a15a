#!/usr/bin/env python3
"""Send Segment calls to a Confiance server with the OFFICIAL Python SDK.

Run with the venv that scripts/test builds (tests/clients/.venv, exported as
CONFIANCE_TEST_PYTHON):

    $CONFIANCE_TEST_PYTHON tests/clients/send_python.py \
        --host http://127.0.0.1:PORT --write-key KEY --run-id RUN [--gzip] [--count N]
    $CONFIANCE_TEST_PYTHON tests/clients/send_python.py \
        --host http://127.0.0.1:PORT --write-key KEY --resend-file PREVIOUS_STDOUT [--gzip]

The SDK (segment-analytics-python, `segment.analytics.Client`) batches the messages itself
and POSTs them to HOST/v1/batch. For every message, one JSON line is printed on stdout once
the SDK has flushed (see message_line below); nothing else goes to stdout. Diagnostics go to
stderr. Exit status: 0 if the SDK delivered everything, 1 if it reported a delivery failure
(an `on_error` callback, or a message it refused to queue), 2 on bad usage.

--resend-file FILE re-sends exactly the messages of a previous run's stdout (same type,
messageId, timestamp, ids, traits, properties, ...), so a test can check that a re-sent batch
is stored once.
"""

import argparse
import json
import sys
import threading
from datetime import datetime

import segment.analytics as segment_analytics
from segment.analytics import Client

EVENTS = ["Product Viewed", "Order Completed", "Products Searched"]
STYLES = ["jazz", "rock", "classique", "soul", "electro"]
FIRST_NAMES = ["Camille", "Louis", "Inès", "Hugo", "Léa"]
PAGES = [("/", "Accueil"), ("/catalogue", "Catalogue"), ("/panier", "Panier")]
SCREENS = ["Accueil", "Fiche produit", "Panier"]

# Keys of an output line that carry the message's payload, besides type and messageId.
PAYLOAD_KEYS = [
    "userId",
    "anonymousId",
    "event",
    "name",
    "category",
    "properties",
    "traits",
    "groupId",
    "previousId",
    "timestamp",
]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", required=True, help="base URL of the server, e.g. http://127.0.0.1:8080")
    p.add_argument("--write-key", required=True)
    p.add_argument("--run-id", help="makes user/anonymous/order ids unique to this run (required unless --resend-file)")
    p.add_argument("--gzip", action="store_true", help="SDK gzip=True: body gzipped, Content-Encoding: gzip")
    p.add_argument("--count", type=int, default=3, help="messages of EACH type (identify, track, page, screen, group, alias); default 3")
    p.add_argument("--resend-file", help="re-send exactly the messages listed in this previous output")
    p.add_argument("--max-retries", type=int, default=3, help="SDK max_retries (default 3; the SDK's own default is 10)")
    p.add_argument("--timeout", type=float, default=15, help="SDK HTTP timeout in seconds (default 15)")
    p.add_argument("--upload-size", type=int, default=100, help="SDK upload_size: messages per batch (default 100, the SDK's)")
    p.add_argument("--debug", action="store_true", help="SDK debug logging on stderr")
    args = p.parse_args(argv)
    if not args.resend_file and not args.run_id:
        p.error("--run-id is required unless --resend-file is given")
    if args.count < 0:
        p.error("--count must be >= 0")
    return args


def generate_calls(run_id, count):
    """Yield (method name, kwargs) for `count` calls of each type, ids derived from run_id."""
    for i in range(count):
        user_id = f"py-user-{run_id}-{i}"
        anon_id = f"py-anon-{run_id}-{i}"
        yield "identify", dict(
            user_id=user_id,
            anonymous_id=anon_id,
            traits={
                "email": f"py-{run_id}-{i}@example.org",
                "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
                "favorite_style": STYLES[i % len(STYLES)],
            },
        )
    for i in range(count):
        user_id = f"py-user-{run_id}-{i}"
        anon_id = f"py-anon-{run_id}-{i}"
        event = EVENTS[i % len(EVENTS)]
        if event == "Product Viewed":
            properties = {
                "product_id": f"lp-{i}",
                "name": "Kind of Blue",
                "artist": "Miles Davis",
                "price": 24.99,
                "currency": "EUR",
            }
        elif event == "Order Completed":
            properties = {"order_id": f"py-order-{run_id}-{i}", "total": 49.98, "currency": "EUR"}
        else:
            properties = {"query": "blue note"}
        yield "track", dict(user_id=user_id, anonymous_id=anon_id, event=event, properties=properties)
    for i in range(count):
        path, title = PAGES[i % len(PAGES)]
        # Anonymous page views: no userId.
        yield "page", dict(
            anonymous_id=f"py-anon-{run_id}-{i}",
            name=title,
            properties={"path": path, "title": title},
        )
    for i in range(count):
        name = SCREENS[i % len(SCREENS)]
        yield "screen", dict(user_id=f"py-user-{run_id}-{i}", name=name, properties={"title": name})
    for i in range(count):
        yield "group", dict(
            user_id=f"py-user-{run_id}-{i}",
            group_id=f"py-group-{run_id}-{i % 2}",
            traits={"name": "Vinyles & Cie Bastille" if i % 2 == 0 else "Vinyles & Cie Croix-Rousse"},
        )
    for i in range(count):
        yield "alias", dict(previous_id=f"py-anon-{run_id}-{i}", user_id=f"py-user-{run_id}-{i}")


# Output key -> SDK keyword argument.
KWARG_OF = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "event": "event",
    "name": "name",
    "category": "category",
    "properties": "properties",
    "traits": "traits",
    "groupId": "group_id",
    "previousId": "previous_id",
}

ALLOWED_KWARGS = {
    "identify": {"user_id", "anonymous_id", "traits"},
    "track": {"user_id", "anonymous_id", "event", "properties"},
    "page": {"user_id", "anonymous_id", "name", "category", "properties"},
    "screen": {"user_id", "anonymous_id", "name", "category", "properties"},
    "group": {"user_id", "anonymous_id", "group_id", "traits"},
    "alias": {"previous_id", "user_id"},
}


def resend_calls(path):
    """Yield (method name, kwargs) re-creating each message of a previous run's output exactly."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                m = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{lineno}: not JSON: {e}")
            kind = m.get("type")
            if kind not in ALLOWED_KWARGS:
                raise SystemExit(f"{path}:{lineno}: unknown message type {kind!r}")
            kwargs = {}
            for key, kw in KWARG_OF.items():
                if m.get(key) is not None and kw in ALLOWED_KWARGS[kind]:
                    kwargs[kw] = m[key]
            kwargs["message_id"] = m["messageId"]
            if m.get("timestamp"):
                # Python 3.11 parses both "+00:00" and "Z"; the SDK re-serialises it with
                # millisecond precision, i.e. unchanged for its own output.
                kwargs["timestamp"] = datetime.fromisoformat(m["timestamp"])
            yield kind, kwargs


def message_line(msg):
    """The JSON line printed for one message the SDK built (`msg` as returned by the SDK)."""
    out = {"sdk": "python", "type": msg["type"], "messageId": msg["messageId"]}
    for key in PAYLOAD_KEYS:
        if key in ("userId", "anonymousId"):
            out[key] = msg.get(key)  # always present, null when absent
        elif msg.get(key) is not None:
            out[key] = msg[key]
    return out


def main(argv):
    args = parse_args(argv)

    failures = []  # (error, [messageId])
    lock = threading.Lock()

    def on_error(error, batch):
        ids = [m.get("messageId") for m in batch]
        with lock:
            failures.append((error, ids))
        print(f"send_python: SDK delivery failure for {len(ids)} message(s): {error!r}", file=sys.stderr)

    client = Client(
        args.write_key,
        host=args.host,
        gzip=args.gzip,
        sync_mode=False,
        max_retries=args.max_retries,
        timeout=args.timeout,
        upload_size=args.upload_size,
        on_error=on_error,
        debug=args.debug,
    )

    calls = resend_calls(args.resend_file) if args.resend_file else generate_calls(args.run_id, args.count)
    lines = []
    refused = 0
    for kind, kwargs in calls:
        ok, msg = getattr(client, kind)(**kwargs)
        if not ok:
            refused += 1
            print(f"send_python: SDK refused to queue {msg.get('messageId')} (queue full)", file=sys.stderr)
        lines.append(message_line(msg))

    # flush() waits for the queue to drain (including retries); shutdown() also stops the
    # consumer thread.
    client.shutdown()

    for line in lines:
        sys.stdout.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()

    failed = sum(len(ids) for _, ids in failures) + refused
    print(
        f"send_python: segment-analytics-python {segment_analytics.VERSION}, {len(lines)} message(s) to {args.host}"
        f"{' (gzip)' if args.gzip else ''}, {failed} failed",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
