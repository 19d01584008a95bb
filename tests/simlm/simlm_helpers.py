"""Prompt builders that follow the adapter contract the simulated LM reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dspex.simlm import SimTransport

CHAT_URL = "http://sim/v1/chat/completions"
DEFAULT_INSTRUCTIONS = "Given the fields `question`, produce the fields `answer`."


def system_message(
    outputs: Sequence[tuple[str, str, str]],
    *,
    instructions: str = DEFAULT_INSTRUCTIONS,
    inputs: Sequence[tuple[str, str, str]] = (("question", "str", "The question to answer."),),
) -> str:
    """A system message: field lists, a structure paragraph, then instructions."""
    lines = ["You fill in output fields from input fields.", "", "Input fields:"]
    lines += [f"- `{n}` ({t}): {d}" for n, t, d in inputs]
    lines += ["", "Output fields:"]
    lines += [f"- `{n}` ({t}): {d}" for n, t, d in outputs]
    lines += [
        "",
        "Message structure: each user message holds the input fields as sections; "
        "reply with the output fields as sections, then the completed marker.",
        "",
        "Instructions:",
        instructions,
    ]
    return "\n".join(lines)


def user_message(
    inputs: dict[str, str], output_names: Sequence[str], *, json_mode: bool = False
) -> str:
    sections = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in inputs.items())
    if json_mode:
        keys = ", ".join(f"`{n}`" for n in output_names)
        return sections + f"Reply with a JSON object with the keys {keys}, in that order."
    asked = ", then ".join(f"`[[ ## {n} ## ]]`" for n in output_names)
    return sections + (
        f"Respond with the corresponding output fields, starting with {asked}, "
        "and then ending with the marker for `[[ ## completed ## ]]`."
    )


def assistant_message(outputs: dict[str, Any], *, json_mode: bool = False) -> str:
    if json_mode:
        return json.dumps(outputs)
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in outputs.items()
    )
    return body + "[[ ## completed ## ]]"


def qa_messages(
    question: str,
    *,
    answer_type: str = "int",
    reasoning: bool = False,
    demos: Sequence[dict[str, Any]] = (),
    instructions: str = DEFAULT_INSTRUCTIONS,
    json_mode: bool = False,
) -> list[dict[str, str]]:
    """A question-answering prompt with optional chain of thought and demos."""
    outputs = [("answer", answer_type, "The final answer.")]
    if reasoning:
        outputs.insert(0, ("reasoning", "str", "Think it through step by step."))
    names = [n for n, _, _ in outputs]
    messages = [{"role": "system", "content": system_message(outputs, instructions=instructions)}]
    for demo in demos:
        messages.append(
            {
                "role": "user",
                "content": user_message({"question": demo["question"]}, names, json_mode=json_mode),
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": assistant_message({"answer": demo["answer"]}, json_mode=json_mode),
            }
        )
    messages.append(
        {
            "role": "user",
            "content": user_message({"question": question}, names, json_mode=json_mode),
        }
    )
    return messages


async def complete(
    transport: SimTransport, messages: list[dict[str, str]], **params: Any
) -> dict[str, Any]:
    body = json.dumps({"model": "sim", "messages": messages, **params}).encode()
    response = await transport.post(CHAT_URL, headers={}, body=body, timeout=10.0)
    assert response.status == 200, response.body
    return response.json()


def parse_sections(text: str) -> dict[str, str]:
    """Minimal reader of `[[ ## name ## ]]` sections, independent of the simulator's."""
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("[[ ## ") and line.endswith(" ## ]]"):
            name = line[len("[[ ## ") : -len(" ## ]]")]
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return {k: v.strip() for k, v in out.items() if k != "completed"}
