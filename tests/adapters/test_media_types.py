"""dspex.Image, dspex.Audio and dspex.File as values: how they are made (and refused),
how they appear in prompts (content parts, also inside lists and models), how they are
shown (placeholders, never base64) and saved (their URL or data URI, loading back equal).
The requests over HTTP are in tests/adapters/test_media_http.py."""

from __future__ import annotations

import base64
import builtins
import json
import pickle
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import pytest
from _media import pdf_bytes, png_bytes, wav_bytes

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter, XMLAdapter
from dspex.adapters.types.image import encode_image
from dspex.adapters.values import format_value
from dspex.errors import MediaError, MediaFileNotFoundError, MediaTypeError

PNG = png_bytes(4, 3)
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


class Caption(dspex.Signature):
    """Describe the image."""

    image: dspex.Image = dspex.InputField()
    caption: str = dspex.OutputField()


class Album(dspex.Signature):
    """Describe the images."""

    images: list[dspex.Image] = dspex.InputField()
    caption: str = dspex.OutputField()


def image_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        part
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


# --- making images ------------------------------------------------------------------------


def test_image_from_bytes_reads_the_kind_from_the_bytes() -> None:
    image = dspex.Image(PNG)
    assert image.url == PNG_URI
    assert image.media_type == "image/png"
    assert image.size == len(PNG)
    assert image.to_bytes() == PNG
    jpeg = dspex.Image(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    assert jpeg.url.startswith("data:image/jpeg;base64,")


def test_urls_and_data_uris_are_kept_as_they_are() -> None:
    for url in ("https://example.com/dog.jpg", "http://example.com/a.png", "gs://bucket/cat.webp"):
        assert dspex.Image(url).url == url
        assert dspex.Image(url=url).url == url
    assert dspex.Image(PNG_URI).url == PNG_URI
    assert dspex.Image({"url": PNG_URI}) == dspex.Image(PNG_URI)
    assert dspex.Image(dspex.Image(PNG)) == dspex.Image(PNG)


def test_bytes_that_are_not_an_image_are_refused_with_what_they_look_like() -> None:
    with pytest.raises(MediaTypeError, match=r"could not be identified as an image \(they look like text/plain"):
        dspex.Image(b"just some text")
    with pytest.raises(MediaTypeError, match=r"application/pdf.*dspex.File"):
        dspex.Image(pdf_bytes())
    with pytest.raises(MediaTypeError, match="match no format"):
        dspex.Image(b"\x00\x01\x02\x03garbage")
    # MediaError is a ValueError: code written for DSPy's ValueError still catches it.
    assert issubclass(MediaTypeError, MediaError) and issubclass(MediaError, ValueError)


def test_strings_that_are_neither_url_nor_data_uri_are_refused() -> None:
    with pytest.raises(MediaTypeError, match="Unrecognized image source"):
        dspex.Image("not an image")
    with pytest.raises(MediaTypeError, match=r"not an image; send documents with dspex.File"):
        dspex.Image("data:application/pdf;base64," + base64.b64encode(pdf_bytes()).decode())
    with pytest.raises(MediaTypeError, match="bytes are application/pdf"):
        dspex.Image("data:image/png;base64," + base64.b64encode(pdf_bytes()).decode())
    with pytest.raises(MediaTypeError, match="not valid base64"):
        dspex.Image("data:image/png;base64,@@@@not base64@@@@")
    with pytest.raises(MediaTypeError, match="not a base64 data URI"):
        dspex.Image("data:image/png,rawtext")


def test_constructing_never_reads_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)

    def no_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Image(...) opened a file")

    monkeypatch.setattr(builtins, "open", no_open)
    monkeypatch.setattr(Path, "read_bytes", no_open)
    for source in (str(photo), photo, f"file://{photo}"):
        with pytest.raises(MediaTypeError, match=r"Image.from_path"):
            dspex.Image(source)
    # Validation (a saved demo, an LM's reply) cannot ask for a download either.
    with pytest.raises((TypeError, pydantic.ValidationError)):
        dspex.Image.model_validate({"url": "http://169.254.169.254/latest", "download": True})


def test_from_path_reads_the_file_and_checks_its_bytes(tmp_path: Path) -> None:
    photo = tmp_path / "photo.bin"  # the name does not decide: the bytes do
    photo.write_bytes(PNG)
    assert dspex.Image.from_path(photo).url == PNG_URI
    assert dspex.Image.from_path(str(photo)) == dspex.Image(PNG)
    notes = tmp_path / "notes.png"  # a text file named like an image
    notes.write_text("not really a picture")
    with pytest.raises(MediaTypeError, match=r"notes.png could not be identified as an image"):
        dspex.Image.from_path(notes)
    with pytest.raises(MediaFileNotFoundError, match=r"File not found: .*missing.png does not exist"):
        dspex.Image.from_path(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError, for generic handlers
        dspex.Image.from_path(tmp_path / "missing.png")
    with pytest.raises(MediaFileNotFoundError, match="is a directory"):
        dspex.Image.from_path(tmp_path)
    with pytest.warns(DeprecationWarning, match="from_path"):
        assert dspex.Image.from_file(photo).url == PNG_URI


def test_pil_images_are_encoded_when_pillow_is_installed() -> None:
    pil = pytest.importorskip("PIL.Image")
    picture = pil.new("RGB", (8, 5), color="red")
    image = dspex.Image(picture)
    assert image.media_type == "image/png"
    assert pil.open(__import__("io").BytesIO(image.to_bytes())).size == (8, 5)
    with pytest.warns(DeprecationWarning):
        assert dspex.Image.from_PIL(picture) == image
    # A PIL image given straight to an image field is sent as an image.
    messages = ChatAdapter().format(Caption, [], {"image": picture})
    assert image_parts(messages) == image.format()


def test_source_and_url_together_or_unknown_keywords_are_refused() -> None:
    with pytest.raises(TypeError, match="both `source` and `url`"):
        dspex.Image("https://example.com/a.png", url="https://example.com/a.png")
    with pytest.raises(pydantic.ValidationError):
        dspex.Image(source="https://example.com/a.png")
    with pytest.raises(TypeError, match="positional source"):
        dspex.Image(url="https://example.com/a.png", download=True)


def test_encode_image_is_the_normalisation_as_a_function() -> None:
    assert encode_image(PNG) == PNG_URI
    assert encode_image({"url": "https://example.com/a.png"}) == "https://example.com/a.png"
    with pytest.raises(MediaTypeError):
        encode_image(12)


# --- shown as placeholders -------------------------------------------------------------------


def test_repr_and_str_are_placeholders_never_the_base64() -> None:
    big = dspex.Image(png_bytes(400, 300, (10, 200, 30)))
    payload = big.url.partition(",")[2]
    for shown in (repr(big), str(big), repr([big]), repr(dspex.Example(image=big)), f"{big}"):
        assert payload[:40] not in shown
        assert "image/png" in shown and f"sha256:{big.digest}" in shown
    assert repr(dspex.Image("https://example.com/dog.jpg")) == "Image(url='https://example.com/dog.jpg')"
    # Signed URLs carry credentials in their query: it is not shown.
    signed = dspex.Image("https://bucket.example.com/a.png?X-Amz-Signature=abcdef123456")
    assert "abcdef123456" not in repr(signed) and "abcdef123456" not in str(signed)


def test_placeholder_names_type_size_and_digest() -> None:
    image = dspex.Image(PNG)
    assert str(image) == f"<image/png, {len(PNG)} B, sha256:{image.digest}>"
    assert dspex.Image(PNG).digest == image.digest
    assert dspex.Image(png_bytes(4, 3, (0, 0, 255))).digest != image.digest


# --- in prompts -------------------------------------------------------------------------------


def test_an_image_input_is_an_image_url_part_between_text_parts() -> None:
    messages = ChatAdapter().format(Caption, [], {"image": dspex.Image(PNG)})
    user = messages[-1]["content"]
    assert isinstance(user, list)
    assert user[0] == {"type": "text", "text": "[[ ## image ## ]]\n"}
    assert user[1] == {"type": "image_url", "image_url": {"url": PNG_URI}}
    assert user[2]["type"] == "text" and "caption" in user[2]["text"]
    # The field's line says what it is; no JSON schema for the LM to fill in.
    assert "- `image` (Image): an image" in messages[0]["content"]
    assert "schema" not in messages[0]["content"]


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()], ids=lambda a: a.name)
def test_a_list_of_images_sends_one_part_per_image(adapter: Any) -> None:
    images = [dspex.Image(PNG), dspex.Image("https://example.com/b.jpg"), dspex.Image(png_bytes(1, 1))]
    messages = adapter.format(Album, [], {"images": images})
    assert [p["image_url"]["url"] for p in image_parts(messages)] == [i.url for i in images]
    text = "".join(p.get("text", "") for p in messages[-1]["content"])
    assert "base64" not in text and "\x00" not in text


def test_images_inside_a_pydantic_model_and_a_dict_become_parts() -> None:
    class Scene(pydantic.BaseModel):
        title: str
        photo: dspex.Image
        extra: list[dspex.Image] | None = None

    class Describe(dspex.Signature):
        scene: Scene = dspex.InputField()
        extras: dict[str, dspex.Image] = dspex.InputField()
        caption: str = dspex.OutputField()

    scene = Scene(title="beach", photo=dspex.Image(PNG), extra=[dspex.Image("https://example.com/c.png")])
    assert format_value(scene).count("\x00dspex-parts:") == 2
    messages = ChatAdapter().format(
        Describe, [], {"scene": scene, "extras": {"a": dspex.Image(png_bytes(2, 2, (1, 2, 3)))}}
    )
    urls = [p["image_url"]["url"] for p in image_parts(messages)]
    assert urls == [PNG_URI, "https://example.com/c.png", dspex.Image(png_bytes(2, 2, (1, 2, 3))).url]
    text = "".join(p.get("text", "") for p in messages[-1]["content"])
    assert '"title":"beach"' in text and "base64" not in text
    # Outside a prompt the model dumps as usual: the image is its data URI.
    assert scene.model_dump(mode="json")["photo"] == PNG_URI


def test_strings_given_for_an_image_field_are_sent_as_images() -> None:
    messages = ChatAdapter().format(Caption, [{"image": PNG_URI, "caption": "red"}], {"image": "https://example.com/a.png"})
    assert [p["image_url"]["url"] for p in image_parts(messages)] == [PNG_URI, "https://example.com/a.png"]
    with pytest.raises(MediaTypeError, match="field 'image'"):
        ChatAdapter().format(Caption, [], {"image": "not an image"})


def test_optional_image_left_out_sends_no_part() -> None:
    class Maybe(dspex.Signature):
        image: dspex.Image | None = dspex.InputField()
        answer: str = dspex.OutputField()

    messages = ChatAdapter().format(Maybe, [], {"image": None})
    assert image_parts(messages) == [] and isinstance(messages[-1]["content"], str)


def test_history_turns_with_images_carry_them() -> None:
    class Chat(dspex.Signature):
        image: dspex.Image | None = dspex.InputField()
        question: str = dspex.InputField()
        history: dspex.History = dspex.InputField()
        answer: str = dspex.OutputField()

    history = dspex.History(messages=[{"image": PNG_URI, "question": "colour?", "answer": "red"}])
    messages = ChatAdapter().format(Chat, [], {"question": "and now?", "history": history, "image": None})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert image_parts([messages[1]]) == [{"type": "image_url", "image_url": {"url": PNG_URI}}]


# --- saved and loaded -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".pkl"])
def test_image_demos_save_as_data_uris_and_load_back_equal(tmp_path: Path, suffix: str) -> None:
    demos = [
        dspex.Example(image=dspex.Image(PNG), caption="red").with_inputs("image"),
        dspex.Example(image=dspex.Image("https://example.com/dog.jpg"), caption="dog").with_inputs("image"),
    ]
    program = dspex.Predict(Caption)
    program.demos = demos
    path = tmp_path / f"program{suffix}"
    program.save(path)
    if suffix == ".json":
        saved = json.loads(path.read_text())
        assert [d["image"] for d in saved["demos"]] == [PNG_URI, "https://example.com/dog.jpg"]
    loaded = dspex.Predict(Caption)
    loaded.load(path, allow_pickle=True)
    assert [d["image"] for d in loaded.demos] == [d.image for d in demos]
    assert all(isinstance(d["image"], dspex.Image) for d in loaded.demos)


def test_a_list_of_image_demos_loads_back_as_images(tmp_path: Path) -> None:
    program = dspex.Predict(Album)
    program.demos = [{"images": [dspex.Image(PNG), dspex.Image("https://example.com/x.png")], "caption": "two"}]
    program.save(tmp_path / "album.json")
    loaded = dspex.Predict(Album)
    loaded.load(tmp_path / "album.json")
    assert loaded.demos[0]["images"] == program.demos[0]["images"]
    messages = ChatAdapter().format(Album, loaded.demos, {"images": [dspex.Image(PNG)]})
    assert len(image_parts(messages)) == 3


def test_values_pickle_and_compare_by_content() -> None:
    image = dspex.Image(PNG)
    assert pickle.loads(pickle.dumps(image)) == image
    assert hash(image) == hash(dspex.Image(PNG))
    assert dspex.Image.model_validate(image.model_dump()) == image
    audio = dspex.Audio(wav_bytes())
    assert pickle.loads(pickle.dumps(audio)) == audio
    document = dspex.File.from_bytes(pdf_bytes(), filename="a.pdf")
    assert dspex.File.model_validate(document.model_dump()) == document


# --- audio and files ---------------------------------------------------------------------------


def test_audio_from_bytes_path_and_data_uri(tmp_path: Path) -> None:
    clip = wav_bytes()
    audio = dspex.Audio(clip)
    assert audio.audio_format == "wav" and base64.b64decode(audio.data) == clip
    assert audio.format() == [{"type": "input_audio", "input_audio": {"data": audio.data, "format": "wav"}}]
    assert dspex.Audio(f"data:audio/x-wav;base64,{audio.data}") == audio
    assert dspex.Audio(data=audio.data, audio_format="x-wav") == audio
    (tmp_path / "clip.wav").write_bytes(clip)
    assert dspex.Audio.from_path(tmp_path / "clip.wav") == audio
    assert dspex.Audio(b"\x00\x01" * 50, audio_format="pcm16").audio_format == "pcm16"
    assert audio.data[:30] not in repr(audio) and "audio/wav" in repr(audio)


def test_audio_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(MediaTypeError, match="could not be identified as audio"):
        dspex.Audio(PNG)
    with pytest.raises(MediaTypeError, match=r"Audio.from_path"):
        dspex.Audio("clip.wav")
    with pytest.raises(MediaFileNotFoundError):
        dspex.Audio.from_path(tmp_path / "nope.wav")
    with pytest.raises(MediaTypeError, match="is not audio"):
        dspex.Audio("data:image/png;base64," + base64.b64encode(PNG).decode())


def test_file_from_path_bytes_and_id(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(pdf_bytes())
    (tmp_path / "notes.txt").write_text("plain notes")
    pdf = dspex.File.from_path(tmp_path / "report.pdf")
    assert pdf.media_type == "application/pdf" and pdf.filename == "report.pdf"
    assert pdf.format()[0]["file"]["file_data"].startswith("data:application/pdf;base64,")
    assert dspex.File.from_path(tmp_path / "notes.txt").media_type == "text/plain"
    assert dspex.File.from_bytes(b"raw").media_type == "application/octet-stream"
    assert dspex.File.from_bytes(pdf_bytes()).media_type == "application/pdf"
    by_id = dspex.File.from_file_id("file-abc", filename="doc.pdf")
    assert by_id.format() == [{"type": "file", "file": {"file_id": "file-abc", "filename": "doc.pdf"}}]
    assert "file_id='file-abc'" in repr(by_id)
    assert pdf.file_data[30:70] not in repr(pdf) and "application/pdf" in repr(pdf)


def test_file_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(MediaFileNotFoundError, match="File not found"):
        dspex.File.from_path(tmp_path / "missing.pdf")
    with pytest.raises(MediaTypeError, match=r"File.from_path"):
        dspex.File("report.pdf")
    with pytest.raises(TypeError, match="file_data"):
        dspex.File(b"x", file_data="data:text/plain;base64,eA==")
    with pytest.raises(pydantic.ValidationError, match="at least one of"):
        dspex.File.model_validate({"other": 1})


def test_a_list_of_files_sends_one_file_part_each() -> None:
    class Docs(dspex.Signature):
        documents: list[dspex.File] = dspex.InputField()
        summary: str = dspex.OutputField()

    files = [dspex.File.from_bytes(pdf_bytes(), filename="a.pdf"), dspex.File.from_file_id("file-1")]
    content = ChatAdapter().format(Docs, [], {"documents": files})[-1]["content"]
    assert [p["file"] for p in content if p["type"] == "file"] == [f.format()[0]["file"] for f in files]


# --- a custom type with content parts ------------------------------------------------------------


class Chart(dspex.Type):
    """The documented example: a titled chart, sent as a text part and an image part."""

    title: str
    png: dspex.Image
    parts_value: ClassVar[bool] = True

    def format(self) -> list[dict[str, Any]]:
        return [{"type": "text", "text": f"Chart: {self.title}"}, *self.png.format()]

    @classmethod
    def description(cls) -> str:
        return "a chart, shown as an image"


def test_a_custom_type_splits_into_its_content_parts() -> None:
    class Explain(dspex.Signature):
        chart: Chart = dspex.InputField()
        charts: list[Chart] = dspex.InputField()
        explanation: str = dspex.OutputField()

    chart = Chart(title="sales", png=dspex.Image(PNG))
    messages = ChatAdapter().format(Explain, [], {"chart": chart, "charts": [chart]})
    content = messages[-1]["content"]
    assert {"type": "text", "text": "Chart: sales"} in content
    assert len(image_parts(messages)) == 2
    assert "- `chart` (Chart): a chart, shown as an image" in messages[0]["content"]
    # Saved, it is its fields (the image as its data URI); it validates back equal.
    assert Chart.model_validate(json.loads(json.dumps(chart.model_dump(mode="json")))) == chart


def test_custom_types_are_found_at_any_depth_of_an_annotation() -> None:
    class Key(dspex.Type):
        model_config = pydantic.ConfigDict(frozen=True)
        name: str

    assert dspex.Type.extract_custom_type_from_annotation(dspex.Image) == [dspex.Image]
    assert dspex.Type.extract_custom_type_from_annotation(list[dict[Key, dspex.Image]] | None) == [Key, dspex.Image]
    assert dspex.Type.extract_custom_type_from_annotation(list[str]) == []
    assert dspex.Image.extract_custom_type_from_annotation(list[Key]) == []  # only subclasses of the caller


def test_formatting_keeps_the_image_string_itself_and_splits_json_markers_outside_format() -> None:
    from dspex.adapters.types.base import with_content_parts

    image = dspex.Image(png_bytes(50, 50, noise=True))
    messages = ChatAdapter().format(Caption, [], {"image": image})
    # Inside Adapter.format the parts are kept aside: the data URI is never copied
    # through JSON, and the cache key can remember its digest by the string itself.
    assert image_parts(messages)[0]["image_url"]["url"] is image.url
    # Outside it (a custom adapter building its own messages) the parts travel as JSON.
    text = "look: " + format_value([image, dspex.Image("https://example.com/a.png")]) + " done"
    split = with_content_parts({"role": "user", "content": text})["content"]
    assert [p["type"] for p in split] == ["text", "image_url", "text", "image_url", "text"]
    assert split[1]["image_url"]["url"] == image.url and split[-1]["text"] == "] done"


def test_the_cache_key_follows_the_image_content() -> None:
    from dspex.clients.cache import cache_key

    def key(image: dspex.Image) -> str:
        messages = ChatAdapter().format(Caption, [], {"image": image})
        return cache_key(provider="openai", model="m", messages=messages, params={})

    big = png_bytes(120, 120, noise=True)
    assert key(dspex.Image(big)) == key(dspex.Image(bytes(big)))  # equal bytes, other objects
    assert key(dspex.Image(big)) != key(dspex.Image(png_bytes(120, 120, (1, 1, 1), noise=True)))
    assert key(dspex.Image(PNG)) != key(dspex.Image(png_bytes(4, 3, (0, 0, 1))))  # small ones too


def test_an_image_output_in_a_demo_is_text_in_the_assistant_turn() -> None:
    class Pick(dspex.Signature):
        question: str = dspex.InputField()
        best: dspex.Image = dspex.OutputField()

    demos = [
        {"question": "a dog?", "best": dspex.Image("https://example.com/dog.jpg")},
        {"question": "red?", "best": dspex.Image(PNG)},
    ]
    messages = ChatAdapter().format(Pick, demos, {"question": "a cat?"})
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    assert all(isinstance(c, str) for c in assistants)  # providers take parts only from the user
    assert "https://example.com/dog.jpg" in assistants[0]
    assert str(dspex.Image(PNG)) in assistants[1] and PNG_URI not in assistants[1]
