from __future__ import annotations

import pickle
from typing import Literal, Optional

import cloudpickle
import pytest
from pydantic import BaseModel

import dspex.signatures as sigs
from dspex.errors import SignatureError
from dspex.signatures import InputField, OutputField, Signature


class Answer(BaseModel):
    value: int
    unit: str


class QA(Signature):
    """Answer the question with a number."""

    question: str = InputField(desc="a question")
    answer: int = OutputField(desc="the result", ge=0)


def test_class_form_reads_docstring_fields_and_constraints() -> None:
    assert QA.instructions == "Answer the question with a number."
    assert list(QA.input_fields) == ["question"]
    assert list(QA.output_fields) == ["answer"]
    answer = QA.output_fields["answer"]
    assert answer.annotation is int
    assert answer.desc == "the result"
    assert answer.constraints() == {"ge": 0}
    assert answer.constraint_text() == "greater than or equal to: 0"
    assert QA.signature == "question -> answer"


def test_class_form_orders_inputs_before_outputs_and_inherits() -> None:
    class WithContext(QA):
        context: list[str] = InputField()

    assert list(WithContext.fields) == ["question", "context", "answer"]
    assert WithContext.instructions == QA.instructions


def test_class_form_without_docstring_gets_default_instructions() -> None:
    class Plain(Signature):
        a: str = InputField()
        b: str = OutputField()

    assert "`a`" in Plain.instructions and "`b`" in Plain.instructions


def test_class_form_annotation_without_field_fails() -> None:
    with pytest.raises(SignatureError, match="no InputField"):

        class Broken(Signature):
            a: str = InputField()
            b: int


def test_class_form_field_without_annotation_is_str() -> None:
    class Loose(Signature):
        a = InputField()
        b = OutputField()

    assert Loose.output_fields["b"].annotation is str


def test_string_form_types() -> None:
    sig = Signature(
        "context: list[str], question -> answer: int, ok: bool, kind: Literal['a', 'b'], "
        "extra: dict[str, float] | None, pair: tuple[int, str], model: Answer, maybe: Optional[int]",
        "Do it.",
    )
    fields = sig.fields
    assert fields["context"].annotation == list[str]
    assert fields["question"].annotation is str and not fields["question"].typed
    assert fields["answer"].annotation is int
    assert fields["kind"].annotation == Literal["a", "b"]
    assert fields["extra"].annotation == Optional[dict[str, float]]
    assert fields["pair"].annotation == tuple[int, str]
    assert fields["model"].annotation is Answer
    assert fields["maybe"].annotation == Optional[int]
    assert sig.instructions == "Do it."


def test_string_form_custom_types_argument() -> None:
    class Local(BaseModel):
        x: int

    sig = Signature("q -> out: Thing", custom_types={"Thing": Local})
    assert sig.output_fields["out"].annotation is Local


def test_string_form_finds_types_defined_by_the_caller() -> None:
    class Nearby(BaseModel):
        y: str

    sig = Signature("q -> out: Nearby")
    assert sig.output_fields["out"].annotation is Nearby


def test_default_instructions_when_none_given() -> None:
    sig = Signature("question -> answer")
    assert sig.instructions
    assert "question" in sig.instructions


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("question answer", "no '->'"),
        ("a -> b -> c", "2 '->'"),
        ("a, a -> b", "twice"),
        ("a -> b, b", "twice"),
        ("a -> a", "both an input and an output"),
        ("class -> b", "keyword"),
        ("1a -> b", "not a valid field name"),
        ("a -> b: Unknown", "unknown type 'Unknown'"),
        ("a -> completed", "end marker"),
        ("a ->", "no output fields"),
        ("a -> _private", "may not start with '_'"),
        ("a -> b: list[", "cannot read the outputs"),
        ("a -> b: Literal[x + 1]", "constants"),
    ],
)
def test_bad_signatures_fail_with_clear_errors(text: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        Signature(text)


def test_non_string_signature_is_rejected() -> None:
    with pytest.raises(SignatureError, match="string"):
        sigs.make_signature(42)  # type: ignore[arg-type]


def test_signatures_are_immutable_values() -> None:
    with pytest.raises(SignatureError, match="immutable"):
        QA.instructions = "changed"  # type: ignore[misc]
    a = Signature("q -> a: int", "same")
    b = Signature("q -> a: int", "same")
    assert a == b and hash(a) == hash(b)
    assert a != Signature("q -> a: int", "different")
    assert a != Signature("q -> a: str", "same")
    assert a.equals(b)


def test_operations_return_new_signatures() -> None:
    changed = QA.with_instructions("New.")
    assert changed.instructions == "New." and QA.instructions != "New."
    appended = QA.append("confidence", OutputField(desc="0-1"), float)
    assert list(appended.output_fields) == ["answer", "confidence"]
    prepended = QA.prepend("reasoning", OutputField(), str)
    assert list(prepended.output_fields) == ["reasoning", "answer"]
    inserted = QA.insert(0, "context", InputField(), list[str])
    assert list(inserted.input_fields) == ["context", "question"]
    deleted = appended.delete("confidence")
    assert deleted == QA
    updated = QA.with_updated_fields("answer", float, desc="a float")
    assert updated.output_fields["answer"].annotation is float
    assert updated.output_fields["answer"].desc == "a float"
    assert QA.output_fields["answer"].annotation is int
    assert changed.instructions == "New."
    assert appended.instructions == QA.instructions


def test_operation_errors() -> None:
    with pytest.raises(SignatureError, match="already has a field"):
        QA.append("answer", OutputField())
    with pytest.raises(SignatureError, match="no field"):
        QA.delete("missing")
    with pytest.raises(SignatureError, match="InputField"):
        QA.append("x", "not a field")  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="out of range"):
        QA.insert(5, "x", InputField())


def test_dump_and_load_state() -> None:
    state = QA.with_instructions("Tuned.").dump_state()
    restored = QA.load_state(state)
    assert restored.instructions == "Tuned."
    with pytest.raises(SignatureError, match="does not have"):
        QA.load_state({"fields": [{"name": "nope", "desc": ""}]})


def test_signatures_pickle_by_value_with_cloudpickle() -> None:
    sig = Signature("q -> a: int", "hello")
    copy = pickle.loads(cloudpickle.dumps(sig))
    assert copy == sig and copy.instructions == "hello"
    assert pickle.loads(pickle.dumps(QA)) is QA


def test_ensure_signature() -> None:
    assert sigs.ensure_signature(QA) is QA
    assert sigs.ensure_signature("a -> b").signature == "a -> b"
    with pytest.raises(SignatureError):
        sigs.ensure_signature(3)  # type: ignore[arg-type]


def test_dict_form() -> None:
    sig = sigs.make_signature({"q": InputField(), "a": (int, OutputField())}, "Dict.")
    assert sig.output_fields["a"].annotation is int


def test_type_name_rendering() -> None:
    assert sigs.type_name(list[str]) == "list[str]"
    assert sigs.type_name(Optional[int]) == "Optional[int]"
    assert sigs.type_name(Literal["x", "y"]) == "Literal['x', 'y']"
    assert sigs.type_name(Answer) == "Answer"


_SCRIPT_WITH_MAIN_CLASSES = '''
import pickle, sys
import cloudpickle, pydantic
import dspex

class Item(pydantic.BaseModel):
    name: str
    qty: int

class Order(dspex.Signature):
    """Read the order."""
    text: str = dspex.InputField()
    item: Item = dspex.OutputField()
    def describe(self) -> str:
        return "helper"

class LongOrder(Order):
    note: str = dspex.InputField()

sys.stdout.buffer.write(cloudpickle.dumps((Order, LongOrder, Order.with_instructions("Tuned."))))
'''

_UNPICKLE = '''
import pickle, sys
order, long_order, tuned = pickle.loads(sys.stdin.buffer.read())
print(list(order.fields), list(long_order.input_fields), tuned.instructions, order.instructions)
print(order.output_fields["item"].annotation.model_validate({"name": "a", "qty": 2}))
try:
    order.item = 1
except Exception as exc:
    print(type(exc).__name__)
'''


def test_signature_classes_in_a_script_pickle_by_value(tmp_path) -> None:
    """A Signature (and its pydantic type) written in a user's script reach another process."""
    import subprocess
    import sys

    script = tmp_path / "user_program.py"
    script.write_text(_SCRIPT_WITH_MAIN_CLASSES)
    payload = subprocess.run([sys.executable, str(script)], capture_output=True, check=True).stdout
    done = subprocess.run(
        [sys.executable, "-c", _UNPICKLE], input=payload, capture_output=True, check=True, cwd=tmp_path.parent
    )
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "['text', 'item'] ['text', 'note'] Tuned. Read the order."
    assert lines[1] == "name='a' qty=2"
    assert lines[2] == "SignatureError"


def test_setting_a_field_or_the_instructions_is_refused_but_helpers_are_free() -> None:
    with pytest.raises(SignatureError, match="immutable"):
        QA.answer = 3  # type: ignore[misc]
    with pytest.raises(SignatureError, match="immutable"):
        QA.with_instructions = None  # type: ignore[method-assign]
    assert "answer" not in QA.__dict__  # field objects live in the signature's data only
