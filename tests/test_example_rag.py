"""examples/rag.py runs as a real script (no network: a guard refuses anything off 127.0.0.1)
and what it prints holds: retrieval beats answering closed-book, and optimizing the
retrieval-augmented program raises its score again, with either retriever."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_examples_dspy import EXAMPLES, figure, run_script

RAG = EXAMPLES / "rag.py"


@pytest.mark.parametrize("retriever", ["colbert", "embeddings"])
def test_rag_example_retrieval_and_optimization_raise_the_score(tmp_path: Path, retriever: str) -> None:
    output = run_script(RAG, tmp_path, "--retriever", retriever, "--dev", "60", "--train", "30")
    closed_book = float(figure(output, "closed book"))
    before = float(figure(output, "rag before"))
    after = float(figure(output, "rag after"))
    assert closed_book < before < after, output
    assert before - closed_book >= 20, output  # the passages carry the answers
    assert int(figure(output, "demos")) > 0
    question = figure(output, "question")
    kingdom = question.rstrip("?").split()[-1]
    assert kingdom in figure(output, "top passage")
    expected = "ColBERTv2" if retriever == "colbert" else "Embeddings(600 passages"
    assert figure(output, "retriever").startswith(expected)

