"""The oracle's answers: format, types, determinism and how prompts move accuracy."""

from __future__ import annotations

import json
from typing import Any

import pytest
from simlm_helpers import complete, parse_sections, qa_messages, system_message, user_message

from dspex.simlm import SimTransport, datasets
from dspex.simlm.tasks import instruction_quality

GOOD_ARITHMETIC = (
    "Compute the exact value of the expression step by step, carefully double-check "
    "each operation, and reply with the integer only."
)
GOOD_FACTS = (
    "Recall the stored fact about the kingdom and give the exact name, concise, nothing else."
)


def _text(reply: dict[str, Any], index: int = 0) -> str:
    return reply["choices"][index]["message"]["content"]


async def _accuracy(transport: SimTransport, task: str, answer_type: str, **prompt: Any) -> float:
    dev = datasets.load(task, "dev")
    correct = 0
    for example in dev:
        reply = await complete(
            transport, qa_messages(example["question"], answer_type=answer_type, **prompt)
        )
        correct += parse_sections(_text(reply))["answer"] == str(example["answer"])
    return correct / len(dev)


@pytest.mark.parametrize(
    ("task", "answer_type", "good"),
    [("arithmetic", "int", GOOD_ARITHMETIC), ("facts", "str", GOOD_FACTS)],
)
async def test_accuracy_rises_with_demos_instructions_and_reasoning(
    task: str, answer_type: str, good: str
) -> None:
    transport = SimTransport(seed=3)
    demos = datasets.load(task, "train")[:4]
    zero_shot = await _accuracy(transport, task, answer_type)
    chain_of_thought = await _accuracy(transport, task, answer_type, reasoning=True)
    optimized = await _accuracy(transport, task, answer_type, demos=demos, instructions=good)
    wrong_demos = [dict(d, answer="I do not know") for d in demos]
    misled = await _accuracy(transport, task, answer_type, demos=wrong_demos)
    assert 0.25 <= zero_shot <= 0.55
    assert optimized >= 0.8
    assert optimized - zero_shot >= 0.3
    assert chain_of_thought >= zero_shot - 0.03  # small gain; noise on 200 examples
    assert misled < zero_shot - 0.15


async def test_reply_is_typed_chat_sections_with_consistent_reasoning() -> None:
    transport = SimTransport(seed=1)
    example = datasets.load("arithmetic", "dev")[0]
    reply = await complete(transport, qa_messages(example["question"], reasoning=True), n=8)
    for choice in reply["choices"]:
        text = choice["message"]["content"]
        assert text.endswith("[[ ## completed ## ]]")
        fields = parse_sections(text)
        assert list(fields) == ["reasoning", "answer"]
        assert int(fields["answer"]) == pytest.approx(example["answer"], abs=10)
        assert fields["reasoning"].endswith(f"= {fields['answer']}.")
        assert choice["finish_reason"] == "stop"


async def test_json_mode_reply_is_one_typed_object() -> None:
    transport = SimTransport(seed=1)
    example = datasets.load("arithmetic", "dev")[1]
    reply = await complete(
        transport, qa_messages(example["question"], reasoning=True, json_mode=True)
    )
    value = json.loads(_text(reply))
    assert list(value) == ["reasoning", "answer"]
    assert isinstance(value["answer"], int)
    by_format = await complete(
        transport, qa_messages(example["question"]), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(_text(by_format))["answer"], int)


async def test_same_request_same_reply_and_seed_changes_it() -> None:
    questions = [e["question"] for e in datasets.load("arithmetic", "dev")[:30]]

    async def replies(server_seed: int, **params: Any) -> list[str]:
        transport = SimTransport(seed=server_seed)
        return [_text(await complete(transport, qa_messages(q), **params)) for q in questions]

    assert await replies(0) == await replies(0)
    assert await replies(0) != await replies(1)
    assert await replies(0, seed=5) != await replies(0, seed=6)
    assert await replies(0, temperature=0.0) != await replies(0, temperature=0.7)


async def test_completions_of_one_request_differ() -> None:
    transport = SimTransport(seed=0)
    question = datasets.load("facts", "dev")[0]["question"]
    reply = await complete(
        transport, qa_messages(question, answer_type="str", reasoning=True), n=10
    )
    texts = {_text(reply, i) for i in range(10)}
    assert len(reply["choices"]) == 10
    assert len(texts) > 1


async def test_unknown_questions_get_type_correct_filler() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    outputs = [
        ("verdict", "Literal['yes', 'no']", "A verdict."),
        ("tags", "list[str]", "Some tags."),
        ("count", "int", "A count."),
        ("ok", "bool", "A flag."),
        ("person", "Person", f"A person. JSON schema: {json.dumps(schema)}"),
    ]
    names = [n for n, _, _ in outputs]
    messages = [
        {"role": "system", "content": system_message(outputs)},
        {
            "role": "user",
            "content": user_message({"question": "Is the sky green?"}, names, json_mode=True),
        },
    ]
    value = json.loads(_text(await complete(SimTransport(), messages)))
    assert value["verdict"] in ("yes", "no")
    assert isinstance(value["tags"], list) and all(isinstance(t, str) for t in value["tags"])
    assert isinstance(value["count"], int) and isinstance(value["ok"], bool)
    assert isinstance(value["person"]["name"], str) and isinstance(value["person"]["age"], int)


async def test_instruction_proposals_follow_the_detected_task_and_vary_in_quality() -> None:
    examples = datasets.load("arithmetic", "train")[:3]
    listing = "\n".join(f"Question: {e['question']} Answer: {e['answer']}" for e in examples)
    outputs = [
        ("summary", "str", "What the data is about."),
        ("proposed_instruction", "str", "A new instruction."),
    ]
    qualities = []
    summaries = set()
    transport = SimTransport(seed=2)
    for attempt in range(20):
        messages = [
            {
                "role": "system",
                "content": system_message(outputs, inputs=[("examples", "str", "Examples.")]),
            },
            {
                "role": "user",
                "content": user_message(
                    {"examples": listing + f"\nAttempt {attempt}"},
                    ["summary", "proposed_instruction"],
                ),
            },
        ]
        fields = parse_sections(_text(await complete(transport, messages)))
        summaries.add(fields["summary"])
        qualities.append(instruction_quality("arithmetic", fields["proposed_instruction"]))
    assert all("arithmetic" in s for s in summaries)
    assert min(qualities) < 0.5 <= max(qualities)
    assert len(set(qualities)) >= 3


async def test_plain_chat_without_format_still_answers() -> None:
    reply = await complete(SimTransport(), [{"role": "user", "content": "Hello there"}])
    assert "Hello there" in _text(reply)
