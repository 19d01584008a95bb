"""Reading dspex-format prompts: fields, types, instructions, inputs, demos, modes."""

from __future__ import annotations

import json

from simlm_helpers import assistant_message, qa_messages, system_message, user_message

from dspex.simlm.prompt import parse, parse_inputs, parse_outputs, parse_system
from dspex.simlm.typespec import parse_type


def _tuples(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def test_system_message_fields_types_and_multiline_instructions() -> None:
    text = system_message(
        [
            ("reasoning", "str", "Think it through step by step."),
            ("label", "Literal['yes', 'no']", "The label."),
            ("scores", "dict[str, int]", "Scores (per item)."),
        ],
        instructions="Line one.\n\nInput fields:\nLine three mentions a header but is still instructions.",
    )
    spec = parse_system(text)
    assert [f.name for f in spec.inputs] == ["question"]
    assert [f.name for f in spec.outputs] == ["reasoning", "label", "scores"]
    assert spec.outputs[1].type.name == "Literal"
    assert spec.outputs[1].type.args == ("yes", "no")
    assert spec.outputs[2].type == parse_type("dict[str, int]")
    assert spec.outputs[2].description == "Scores (per item)."
    assert spec.instructions.startswith("Line one.")
    assert spec.instructions.endswith("still instructions.")


def test_model_field_schema_after_description() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    text = system_message([("person", "Person", f"The person. JSON schema: {json.dumps(schema)}")])
    (field,) = parse_system(text).outputs
    assert field.type.name == "Person"
    assert field.type.schema == schema
    assert field.description == "The person."


def test_user_inputs_drop_the_request_line() -> None:
    text = user_message(
        {"question": "What is 2 + 2?", "context": "Some\n\nmultiline text"}, ["answer"]
    )
    assert parse_inputs(text) == {"question": "What is 2 + 2?", "context": "Some\n\nmultiline text"}
    json_text = user_message({"question": "Hi?"}, ["answer"], json_mode=True)
    assert parse_inputs(json_text) == {"question": "Hi?"}


def test_assistant_outputs_in_chat_and_json_form() -> None:
    chat = assistant_message({"reasoning": "because", "answer": 4})
    assert parse_outputs(chat) == {"reasoning": "because", "answer": "4"}
    assert parse_outputs(assistant_message({"answer": 4}, json_mode=True)) == {"answer": 4}
    assert parse_outputs("no structure at all") == {}


def test_demos_and_current_inputs_in_chat_mode() -> None:
    demos = [
        {"question": "What is 1 + 1?", "answer": 2},
        {"question": "What is 2 + 5?", "answer": 7},
    ]
    prompt = parse(_tuples(qa_messages("What is 3 + 3?", demos=demos)))
    assert not prompt.json_mode
    assert prompt.inputs == {"question": "What is 3 + 3?"}
    assert [d.inputs["question"] for d in prompt.demos] == ["What is 1 + 1?", "What is 2 + 5?"]
    assert [d.outputs["answer"] for d in prompt.demos] == ["2", "7"]


def test_json_mode_from_phrase_or_response_format() -> None:
    demos = [{"question": "What is 1 + 1?", "answer": 2}]
    by_phrase = parse(_tuples(qa_messages("What is 3 + 3?", demos=demos, json_mode=True)))
    assert by_phrase.json_mode
    assert by_phrase.demos[0].outputs == {"answer": 2}
    by_format = parse(_tuples(qa_messages("What is 3 + 3?")), json_requested=True)
    assert by_format.json_mode


def test_outputs_fall_back_to_response_schema_or_request_markers() -> None:
    messages = [
        (
            "user",
            "[[ ## question ## ]]\nHi\n\nRespond with `[[ ## reply ## ]]` then `[[ ## completed ## ]]`.",
        )
    ]
    assert [f.name for f in parse(messages).system.outputs] == ["reply"]
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    assert [f.name for f in parse(messages, json_requested=True, schema=schema).system.outputs] == [
        "score"
    ]


def test_type_strings() -> None:
    assert parse_type("Optional[int]").args[0].name == "int"
    assert parse_type("list[Literal['a', 'b']]").args[0].args == ("a", "b")
    assert parse_type("not a [ type").name == "str"


# DSPy's ChatAdapter writes the same parts in its own words; the benchmark that
# compares the two optimizers needs both programs' instructions to count.
DSPY_LAYOUT_SYSTEM = """Your input fields are:
1. `question` (str): A grade-school arithmetic question.
Your output fields are:
1. `reasoning` (str):
2. `answer` (int): The number.
All interactions will be structured in the following way, with the appropriate values filled in.

[[ ## question ## ]]
{question}

[[ ## answer ## ]]
{answer}

[[ ## completed ## ]]
In adhering to this structure, your objective is:
        Compute the result carefully.
          Keep the indentation of this line.
        Reply with the number only."""


def test_dspy_layout_fields_and_indented_instructions() -> None:
    spec = parse_system(DSPY_LAYOUT_SYSTEM)
    assert [f.name for f in spec.inputs] == ["question"]
    assert spec.inputs[0].description == "A grade-school arithmetic question."
    assert [f.name for f in spec.outputs] == ["reasoning", "answer"]
    assert spec.outputs[1].type == parse_type("int")
    assert spec.instructions == (
        "Compute the result carefully.\n  Keep the indentation of this line.\n"
        "Reply with the number only."
    )


def test_dspy_layout_instructions_move_the_oracle() -> None:
    from dspex.simlm import datasets, oracle, tasks

    record = datasets.load("arithmetic", "dev")[0]
    ideas = " ".join(idea.sentences[0] for idea in tasks.PROFILES["arithmetic"].ideas)
    plain = DSPY_LAYOUT_SYSTEM.rsplit("\n", 3)[0] + "\n        Answer."
    rich = DSPY_LAYOUT_SYSTEM.rsplit("\n", 3)[0] + "\n        " + ideas
    user = f"[[ ## question ## ]]\n{record['question']}\n\nRespond with the fields."
    config = oracle.OracleConfig()

    def probability(system: str) -> float:
        prompt = parse([("system", system), ("user", user)])
        found = oracle.find_record(prompt.inputs)
        assert found is not None
        answer = oracle.answer_field(prompt.system.outputs, found)
        assert answer is not None
        return oracle.correct_probability(prompt, found, answer, config)

    assert probability(rich) > probability(plain) + 0.1
