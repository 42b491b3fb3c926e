"""A bounded thread pool for the synchronous clients (boto3, prometheus-api-client).

Their calls run here, never on the event loop. The pool is bounded so that thousands of
ScaledObjects polling a slow source queue up instead of spawning thousands of threads; each
poll is still bounded by the loop's timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MAX_WORKERS = int(os.environ.get("AUTOSCALE_BLOCKING_WORKERS", "16"))

_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=MAX_WORKERS, thread_name_prefix="autoscale-blocking"
        )
    return _pool


async def run_blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking call in the bounded pool and await its result."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await loop.run_in_executor(_executor(), call)
