

def test_a_python_literal_reply_parses_but_never_runs_code() -> None:
    from dspex.adapters.values import extract_json_object

    assert extract_json_object("{'answer': '100%', 'ok': True}") == {"answer": "100%", "ok": True}
    assert extract_json_object("{'answer': __import__('os').getcwd()}") is None
