"""Byte-level text and the synthetic long-context tasks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab.data.images import DatasetNotFoundError
from adjoint_lab.data.synthetic import SEPARATOR, associative_recall, selective_copying
from adjoint_lab.data.text import read_text_bytes, split_corpus, stdlib_corpus, text_windows


def test_stdlib_corpus_is_real_python_source_and_deterministic():
    corpus = stdlib_corpus(max_bytes=200_000)
    assert corpus.dtype == np.uint8 and len(corpus) == 200_000
    text = bytes(corpus).decode("utf-8", errors="replace")
    assert "def " in text and "import " in text
    assert np.array_equal(corpus, stdlib_corpus(max_bytes=200_000))


def test_text_from_a_file_or_a_folder(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"second")
    (tmp_path / "a.txt").write_bytes(b"first ")
    (tmp_path / "skip.bin").write_bytes(b"\0\1\2")
    assert bytes(read_text_bytes(tmp_path)) == b"first second"
    assert bytes(read_text_bytes(tmp_path / "b.txt")) == b"second"
    with pytest.raises(DatasetNotFoundError, match="data.path='.*missing'"):
        read_text_bytes(tmp_path / "missing")


def test_windows_are_consecutive_bytes_of_the_corpus():
    corpus = np.frombuffer(bytes(range(256)) * 4, np.uint8)
    train, held_out = split_corpus(corpus, 0.25)
    assert len(train) == 768 and len(held_out) == 256
    windows = text_windows(train, 16, 5, np.random.default_rng(0))
    assert windows.shape == (5, 17) and windows.dtype == np.int32
    assert np.all(np.diff(windows, axis=1) % 256 == 1)
    with pytest.raises(ValueError, match="fewer than one window"):
        text_windows(corpus[:10], 16, 1, np.random.default_rng(0))


def test_selective_copying_answers_are_the_data_tokens_in_order():
    tokens, weights = selective_copying(np.random.default_rng(1), 4, 20, 5, 10)
    assert tokens.shape == (4, 26) and weights.shape == (4, 25)
    for row, w in zip(tokens, weights, strict=True):
        context, answer = row[:20], row[21:]
        assert row[20] == SEPARATOR
        assert np.array_equal(context[context > SEPARATOR], answer)
        targets = row[1:]
        assert np.array_equal(targets[w == 1], answer)


def test_associative_recall_answer_is_the_value_of_the_queried_key():
    tokens, weights = associative_recall(np.random.default_rng(2), 8, 6, 30)
    assert tokens.shape == (8, 15)
    for row, w in zip(tokens, weights, strict=True):
        pairs = row[:12].reshape(6, 2)
        assert len(set(pairs[:, 0])) == 6  # distinct keys
        query, answer = row[13], row[14]
        assert answer == dict(map(tuple, pairs))[query]
        assert np.array_equal(row[1:][w == 1], [answer])
    with pytest.raises(ValueError, match="distinct keys"):
        associative_recall(np.random.default_rng(0), 1, 20, 30)


def test_spiral_reference_trajectories_match_an_independent_float64_solve():
    # The task's data comes from SciPy; check it against diffrax's Dopri5 in float64, and that
    # the seeds and noise give what the task promises (the sets differ, noise of that size).
    import dataclasses

    import diffrax

    from adjoint_lab.core import solve
    from adjoint_lab.tasks.node_spiral import SpiralDataConfig, spiral_field, spiral_trajectories

    config = dataclasses.replace(SpiralDataConfig(), n_times=21, noise=0.0)
    train, test = spiral_trajectories(config, (3, 2), (0, 1))
    assert train.shape == (3, 21, 2) and test.shape == (2, 21, 2)
    ts = jnp.linspace(0.0, config.t1, config.n_times)

    def one(y0):
        controller = diffrax.PIDController(rtol=1e-11, atol=1e-11)
        return solve(
            spiral_field, 0.0, config.t1, y0, solver=diffrax.Dopri5(), controller=controller, ts=ts
        ).ys

    both = np.concatenate([train, test])
    want = jax.jit(jax.vmap(one))(jnp.asarray(both[:, 0], jnp.float64))
    np.testing.assert_allclose(both, want, rtol=0, atol=1e-8)
    assert not np.allclose(train[0, 0], test[0, 0])
    noisy = dataclasses.replace(config, noise=0.01)
    (with_noise,) = spiral_trajectories(noisy, (3,), (0,))
    assert 0.005 < np.std(with_noise - train) < 0.02
