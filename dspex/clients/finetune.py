"""Fine-tuning through an OpenAI-compatible API: ``LM.finetune(train_data, ...)``.

The flow is the provider's: upload the training data as a JSONL file (``POST /files``,
``purpose=fine-tune``), create a job (``POST /fine_tuning/jobs``), poll it
(``GET /fine_tuning/jobs/{id}``) until it succeeds, fails or is cancelled, and return a
new `LM` for the model it produced. `TrainingJob` is the handle: a
`concurrent.futures.Future` (``job.result()`` waits for the new LM) with the job's
``status()`` and its events along the way.

Checked before any long work, each with a `FinetuneNotSupportedError` that says what to
do: the provider (only OpenAI-compatible endpoints fine-tune here), the training data
(chat examples ending with the assistant's answer), and the server itself (one that
answers the upload with 404 or 405 does not offer fine-tuning).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dspex.errors import FinetuneError, FinetuneNotSupportedError, InputError

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("dspex.finetune")

#: job states the provider reports that end a job
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_POLL_INTERVAL = 10.0
_CLIENT_OPTIONS = frozenset({"poll_interval", "timeout"})


class TrainingJob(concurrent.futures.Future):  # type: ignore[type-arg]
    """A fine-tuning job: ``result()`` is the fine-tuned `LM` (or raises `FinetuneError`)."""

    def __init__(self, lm: Any, train_data: list[dict[str, Any]], train_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.lm = lm
        self.train_data = train_data
        self.train_kwargs = train_kwargs
        self.job_id: str | None = None
        self.file_id: str | None = None
        self.fine_tuned_model: str | None = None
        self.events: list[dict[str, Any]] = []
        self._status = "pending"

    def status(self) -> str:
        """The job's state: pending (not created yet), then the provider's (validating_files,
        queued, running, succeeded, failed, cancelled)."""
        return self._status

    def _note(self, status: str, **details: Any) -> None:
        self._status = status
        self.events.append({"status": status, "time": time.time(), **details})
        log.info("fine-tuning %s: %s %s", self.job_id or "(new)", status, details or "")


def check_train_data(train_data: Sequence[Any]) -> list[dict[str, Any]]:
    """The training examples as chat-format dicts, or an `InputError` naming the bad one."""
    if not train_data:
        raise InputError("fine-tuning needs training data: a list of {'messages': [...]} chat examples")
    checked = []
    for index, item in enumerate(train_data):
        messages = item.get("messages") if isinstance(item, Mapping) else None
        if not isinstance(messages, list) or not messages:
            raise InputError(f"training example {index} has no 'messages' list: {str(item)[:200]}")
        if not isinstance(messages[-1], Mapping) or messages[-1].get("role") != "assistant":
            raise InputError(
                f"training example {index} must end with the assistant's message (what the model "
                "should learn to write)"
            )
        checked.append({"messages": [dict(m) for m in messages]})
    return checked


def start(lm: Any, train_data: Sequence[Any], train_kwargs: Mapping[str, Any] | None) -> TrainingJob:
    """Check everything that can be checked at once, then run the job in the background."""
    if getattr(lm, "provider", None) != "openai":
        raise FinetuneNotSupportedError(
            f"{getattr(lm, 'model', lm)!r}: fine-tuning is available for OpenAI-compatible "
            "endpoints only ('openai/<model>' with their api_base); Anthropic's API does not "
            "fine-tune. Fine-tune where your provider offers it and point an LM at the result"
        )
    job = TrainingJob(lm, check_train_data(train_data), dict(train_kwargs or {}))
    thread = threading.Thread(target=_run_job, args=(job,), name="dspex-finetune", daemon=True)
    thread.start()
    return job


def _run_job(job: TrainingJob) -> None:
    if not job.set_running_or_notify_cancel():
        return
    try:
        model = asyncio.run(_finetune(job))
    except BaseException as exc:  # the job's outcome, for whoever waits on it
        job._note("failed", error=str(exc))
        job.set_exception(exc)
        return
    job.set_result(job.lm.copy(model=f"openai/{model}"))


async def _finetune(job: TrainingJob) -> str:
    # aiohttp loads when a job runs, not with the LM client (importing dspex.LM stays cheap).
    import aiohttp

    lm = job.lm
    options = {k: v for k, v in job.train_kwargs.items() if k in _CLIENT_OPTIONS}
    request_kwargs = {k: v for k, v in job.train_kwargs.items() if k not in _CLIENT_OPTIONS}
    poll_interval = float(options.get("poll_interval", DEFAULT_POLL_INTERVAL))
    deadline = time.monotonic() + float(options.get("timeout", 24 * 3600))
    base = lm._api_base().rstrip("/")
    key = lm._api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        job.file_id = await _upload(session, base, job.train_data)
        job._note("uploaded", file_id=job.file_id, examples=len(job.train_data))
        body = {"training_file": job.file_id, "model": lm.model_name, **request_kwargs}
        created = await _json(session, "POST", f"{base}/fine_tuning/jobs", json=body)
        job.job_id = str(created["id"])
        job._note(str(created.get("status", "queued")))
        while True:
            state = await _json(session, "GET", f"{base}/fine_tuning/jobs/{job.job_id}")
            status = str(state.get("status", "unknown"))
            if status != job.status():
                job._note(status, trained_tokens=state.get("trained_tokens"))
            if status == "succeeded":
                model = state.get("fine_tuned_model")
                if not model:
                    raise FinetuneError(f"fine-tuning job {job.job_id} succeeded but named no fine_tuned_model")
                job.fine_tuned_model = str(model)
                return job.fine_tuned_model
            if status in FINAL_STATES:
                error = state.get("error") or {}
                message = error.get("message") if isinstance(error, Mapping) else str(error)
                raise FinetuneError(f"fine-tuning job {job.job_id} {status}: {message or 'no reason given'}")
            if time.monotonic() > deadline:
                raise FinetuneError(f"fine-tuning job {job.job_id} still {status} at the timeout; it keeps running "
                                    "at the provider: check it there")
            await asyncio.sleep(poll_interval)


async def _upload(session: aiohttp.ClientSession, base: str, train_data: list[dict[str, Any]]) -> str:
    import aiohttp

    lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in train_data)
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", lines.encode(), filename=f"dspex-{uuid.uuid4().hex[:8]}.jsonl",
                   content_type="application/jsonl")
    try:
        async with session.post(f"{base}/files", data=form) as response:
            if response.status in (404, 405):
                raise FinetuneNotSupportedError(
                    f"the server at {base} does not offer fine-tuning (POST /files answered "
                    f"{response.status}); fine-tune with a provider that does"
                )
            payload = await _payload(response, "uploading the training file")
    except aiohttp.ClientError as exc:
        raise FinetuneError(f"could not reach {base} to upload the training file: {exc}") from exc
    return str(payload["id"])


async def _json(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    import aiohttp

    try:
        async with session.request(method, url, **kwargs) as response:
            return await _payload(response, f"{method} {url}")
    except aiohttp.ClientError as exc:
        raise FinetuneError(f"{method} {url} failed: {exc}") from exc


async def _payload(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    text = await response.text()
    if response.status >= 400:
        raise FinetuneError(f"{what}: HTTP {response.status}: {text[:500]}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FinetuneError(f"{what}: the answer is not JSON: {text[:200]}") from exc
    if not isinstance(value, dict):
        raise FinetuneError(f"{what}: expected a JSON object, got {text[:200]}")
    return value


__all__ = ["TrainingJob", "check_train_data", "start"]
