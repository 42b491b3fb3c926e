"""Logging set-up: human-readable text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(*, log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO and may echo request details: keep them at WARNING.
    for noisy in ("kubernetes_asyncio", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # aiormq logs every refused connect and broker-side close at ERROR, aiokafka every failed
    # bootstrap ("Unable connect to ...", twice a second during a broker outage); the scalers
    # report those themselves, once per failure streak.
    for noisy in ("aiormq", "aio_pika", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
