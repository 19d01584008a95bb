"""The simulated LM's files and fine-tuning jobs (the OpenAI endpoints), so
``LM.finetune`` and `BootstrapFinetune` are tested over HTTP.

- ``POST /v1/files`` (multipart: ``file``, ``purpose``) stores a JSONL training file;
- ``POST /v1/fine_tuning/jobs`` (``training_file``, ``model``, ``suffix``) creates a job;
- ``GET /v1/fine_tuning/jobs/{id}`` reports it; each report moves it one state on
  (validating_files, queued, running, running, succeeded), so a test advances a job by
  polling, never by waiting; ``POST /v1/fine_tuning/jobs/{id}/cancel`` cancels it.

A training file whose examples are not chat examples ending with the assistant fails
validation; the fault config's ``finetune_failure`` fails the next jobs while running.
The model a job produces (``ft:<model>:<suffix>:<id>``) has learned the questions of the
training data, and the tasks it saw at least five examples of: the oracle answers those
questions, and less so every question of those tasks, more often right (`trained`,
`trained_tasks` in `OracleConfig`).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from dspex.simlm import datasets

_TASK_EXAMPLES = 5  # examples of a task a fine-tuned model needs to get better at all of it
_STATES = ("validating_files", "queued", "running", "running", "succeeded")
_JOB_PATH = re.compile(r"^/v1/fine_tuning/jobs/([\w-]+)(/cancel)?$")
_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", re.DOTALL)


@dataclass
class _Job:
    id: str
    model: str
    training_file: str
    suffix: str
    polls: int = 0
    status: str = "validating_files"
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    fail: bool = False


@dataclass
class FineTunes:
    """Files, jobs and what each fine-tuned model learned."""

    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    trained: dict[str, frozenset[str]] = field(default_factory=dict)
    trained_tasks: dict[str, frozenset[str]] = field(default_factory=dict)
    fail_next: int = 0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def handles(self, path: str) -> bool:
        return path == "/v1/files" or path.startswith("/v1/fine_tuning/jobs")

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if (method, path) == ("POST", "/v1/files"):
            return self._upload(headers, body)
        if (method, path) == ("POST", "/v1/fine_tuning/jobs"):
            return self._create(body)
        match = _JOB_PATH.match(path)
        if match is None or match.group(1) not in self.jobs:
            return 404, _error(f"no fine-tuning job at {path}")
        job = self.jobs[match.group(1)]
        if method == "POST" and match.group(2):
            if job.status not in ("succeeded", "failed", "cancelled"):
                job.status = "cancelled"
            return 200, self._view(job)
        if method == "GET" and not match.group(2):
            self._advance(job)
            return 200, self._view(job)
        return 405, _error(f"{method} is not allowed on {path}")

    def knowledge(self, model: str) -> dict[str, frozenset[str]]:
        """What ``model`` learned, as `OracleConfig` overrides (empty for a base model)."""
        if model not in self.trained:
            return {}
        return {"trained": self.trained[model], "trained_tasks": self.trained_tasks[model]}

    # --- endpoints --------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        fields = _multipart(content_type, body)
        if "file" not in fields:
            return 400, _error("a file upload needs a multipart 'file' field")
        rows = []
        for number, line in enumerate(fields["file"].decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                return 400, _error(f"line {number} of the training file is not JSON")
        file_id = f"file-sim{next(self._ids)}"
        self.files[file_id] = rows
        purpose = fields.get("purpose", b"fine-tune").decode()
        return 200, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "purpose": purpose,
                     "filename": "training.jsonl"}

    def _create(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return 400, _error("the request body is not JSON")
        training_file = request.get("training_file")
        if training_file not in self.files:
            return 400, _error(f"no file {training_file!r}: upload it first")
        job = _Job(f"ftjob-sim{next(self._ids)}", str(request.get("model", "sim-lm")), training_file,
                   str(request.get("suffix") or "dspex"))
        if self.fail_next > 0:
            self.fail_next -= 1
            job.fail = True
        self.jobs[job.id] = job
        return 200, self._view(job)

    def _advance(self, job: _Job) -> None:
        if job.status in ("succeeded", "failed", "cancelled"):
            return
        job.polls += 1
        job.status = _STATES[min(job.polls, len(_STATES) - 1)]
        rows = self.files[job.training_file]
        if job.status == "queued" and not all(_is_chat_example(row) for row in rows):
            job.status = "failed"
            job.error = {"code": "invalid_training_file",
                         "message": "every example must be {'messages': [...]} ending with an assistant message"}
        elif job.status == "running" and job.fail and job.polls >= 3:
            job.status = "failed"
            job.error = {"code": "training_failed", "message": "the simulated training run failed (injected fault)"}
        elif job.status == "succeeded":
            job.fine_tuned_model = f"ft:{job.model}:{job.suffix}:{job.id}"
            questions = _questions(rows)
            self.trained[job.fine_tuned_model] = frozenset(questions)
            tasks = [record.task for q in questions if (record := datasets.lookup(q)) is not None]
            self.trained_tasks[job.fine_tuned_model] = frozenset(
                task for task in set(tasks) if tasks.count(task) >= _TASK_EXAMPLES
            )

    def _view(self, job: _Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "object": "fine_tuning.job",
            "model": job.model,
            "status": job.status,
            "training_file": job.training_file,
            "fine_tuned_model": job.fine_tuned_model,
            "error": job.error,
            "trained_tokens": sum(len(json.dumps(r)) // 4 for r in self.files[job.training_file])
            if job.status == "succeeded" else None,
        }


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """Field name -> value of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, bytes] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part.get_payload(decode=True) or b""
    return fields


def _is_chat_example(row: Any) -> bool:
    messages = row.get("messages") if isinstance(row, dict) else None
    return isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict) \
        and messages[-1].get("role") == "assistant"


def _questions(rows: list[dict[str, Any]]) -> list[str]:
    """The dataset questions the training examples hold (in their last user message)."""
    found = []
    for row in rows:
        users = [m.get("content", "") for m in row.get("messages", []) if m.get("role") == "user"]
        if not users or not isinstance(users[-1], str):
            continue
        match = _QUESTION.search(users[-1])
        text = match.group(1).strip() if match else users[-1]
        if datasets.lookup(text) is not None:
            found.append(datasets.normalise(text))
    return found


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


__all__ = ["FineTunes"]
