"""Intent classification on sentence embeddings, with an explicit out-of-scope class and a calibrated confidence.

Intents are data: a flow declares them (name, description, example phrases) or imports them from the intent
libraries in ``flows/intents/`` and hands this module an ``IntentSpec``; nothing here knows any intent by name.
``IntentModels`` keeps one sentence encoder per process (all-MiniLM-L6-v2, ``models/embeddings.py``) and one fitted
classifier per spec, so every flow gets its own, built once and shared by all its calls.

How a request is scored: cosine similarity to every example phrase; each intent's score is the mean of its
``TOP_K`` nearest examples, and so is the out-of-scope class's (phrases that belong to no intent: other
businesses, assistants' tasks, near-miss requests from the same domain). Matching meaning, not words, is what
keeps "can you delete my saved credit card" away from lost_card.

Why a learned calibrator over the similarities rather than a softmax of them: a similarity of 0.6 means "the same
request" for one intent and "a neighbour" for another, and the margins to the strongest rival and to the
out-of-scope class carry most of the evidence. A logistic regression on (score, margin to the strongest rival,
margin to out-of-scope) is fitted on leave-one-out scores of the spec's own phrases (near-duplicates of the
held-out phrase are left out too, since a caller never says an example verbatim), one row per phrase and intent:
right only for the phrase's own intent when it also wins. So runner-ups and near-ties learn low values, and the
output for the best intent is the probability that it is right and the request in scope, which is what the
answer threshold needs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)

OUT_OF_SCOPE = "out_of_scope"
TOP_K = 7
"""Examples averaged per class: one lucky neighbour is not enough evidence (3, 5, 7, 10 tried; bench/nlu.py)."""
NEAR_DUPLICATE = 0.9
"""Leave-one-out also leaves out phrases this similar to the held-out one."""
IN_SCOPE_WEIGHT = 3.0
"""Weight of the calibrator's right answers against its out-of-scope and wrong ones. The out-of-scope libraries
hold more phrases than the intents, and near-misses among them; unweighted, the calibrator learnt that prior and
clarified a quarter of clear in-flow requests (1, 3, 4, 5, 8 tried; bench/nlu.py)."""
_N_ALTERNATIVES = 3
_NON_WORD = re.compile(r"[^\w' ]+")


class Encoder(Protocol):
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


@dataclass(frozen=True)
class IntentResult:
    intent: str  # always one of the spec's intents, never "out_of_scope"
    confidence: float  # calibrated probability that `intent` is right and the request is in scope
    alternatives: list[tuple[str, float]]  # next most likely intents, best first
    out_of_scope: float = 0.0  # similarity-based score of the out-of-scope class (0..1)


@dataclass(frozen=True)
class IntentDefinition:
    name: str
    examples: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class IntentSpec:
    """What one flow can understand: its intents and the phrases that are none of them."""

    intents: tuple[IntentDefinition, ...]
    out_of_scope: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.intents:
            raise ValueError("an intent spec needs at least one intent")
        names = [i.name for i in self.intents]
        if len(set(names)) != len(names) or OUT_OF_SCOPE in names:
            raise ValueError(f"intent names must be unique and not {OUT_OF_SCOPE!r}: {names}")
        for intent in self.intents:
            bad = [e for e in intent.examples if not isinstance(e, str) or not e.strip()]
            if bad:
                raise ValueError(f"intent {intent.name!r} has non-text examples {bad!r} (quote yes/no)")
            if len(intent.examples) < 2:
                raise ValueError(f"intent {intent.name!r} needs at least 2 example phrases")

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.intents]

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for intent in self.intents:
            h.update(f"\x00intent\x00{intent.name}\x00{intent.description}".encode())
            for example in intent.examples:
                h.update(b"\x01" + example.encode())
        for phrase in self.out_of_scope:
            h.update(b"\x02" + phrase.encode())
        return h.hexdigest()


def _class_scores(sims: np.ndarray, labels: np.ndarray, n_classes: int, k: int | None = None) -> np.ndarray:
    """(n_queries, n_classes): mean of each class's k highest similarities (-1 for a class with no example)."""
    k = TOP_K if k is None else k
    out = np.full((sims.shape[0], n_classes), -1.0, dtype=np.float64)
    for c in range(n_classes):
        cols = sims[:, labels == c]
        if cols.shape[1] == 0:
            continue
        kk = min(k, cols.shape[1])
        top = -np.partition(-cols, kk - 1, axis=1)[:, :kk]
        out[:, c] = top.mean(axis=1)
    return out


def _features(scores: np.ndarray, n_intents: int) -> tuple[np.ndarray, np.ndarray]:
    """Best intent per row and the calibrator's features: best, margin to the 2nd intent, margin to out-of-scope."""
    intent_scores = scores[:, :n_intents]
    order = np.argsort(-intent_scores, axis=1)
    rows = np.arange(scores.shape[0])
    best = intent_scores[rows, order[:, 0]]
    second = intent_scores[rows, order[:, 1]] if n_intents > 1 else np.full_like(best, -1.0)
    oos = scores[:, n_intents]
    return order[:, 0], np.stack([best, best - second, best - oos], axis=1)


def _all_features(scores: np.ndarray, n_intents: int) -> np.ndarray:
    """(rows, n_intents, 3): each intent's score, its margin to its strongest rival (the best intent against the
    runner-up, every other against the best) and its margin to the out-of-scope class."""
    intent_scores = scores[:, :n_intents]
    order = np.argsort(-intent_scores, axis=1)
    rows = np.arange(scores.shape[0])
    top = intent_scores[rows, order[:, 0]]
    second = intent_scores[rows, order[:, 1]] if n_intents > 1 else np.full_like(top, -1.0)
    is_top = np.arange(n_intents)[None, :] == order[:, :1]
    rival = np.where(is_top, second[:, None], top[:, None])
    oos = scores[:, n_intents : n_intents + 1]
    return np.stack([intent_scores, intent_scores - rival, intent_scores - oos], axis=2)


@dataclass
class IntentClassifier:
    """One flow's intents: maps an utterance to an intent with a calibrated confidence."""

    spec: IntentSpec
    encoder: Encoder
    embeddings: np.ndarray  # (n_examples, dim), unit rows
    labels: np.ndarray  # class index per example; len(intents) is the out-of-scope class
    coef: np.ndarray = field(default_factory=lambda: np.zeros(3))
    intercept: float = 0.0
    loo_accuracy: float = 0.0

    @property
    def intents(self) -> list[str]:
        return self.spec.names

    @staticmethod
    def phrases(spec: IntentSpec) -> tuple[list[str], np.ndarray]:
        """Every phrase the classifier is built from (examples, descriptions, out-of-scope) and its class."""
        texts: list[str] = []
        labels: list[int] = []
        for idx, intent in enumerate(spec.intents):
            for text in (*intent.examples, *([intent.description] if intent.description else [])):
                texts.append(text)
                labels.append(idx)
        texts += list(spec.out_of_scope)
        labels += [len(spec.intents)] * len(spec.out_of_scope)
        return texts, np.asarray(labels)

    @classmethod
    def build(
        cls, spec: IntentSpec, encoder: Encoder, embed: Callable[[list[str]], np.ndarray] | None = None
    ) -> IntentClassifier:
        """Embed the spec's phrases (``embed``: a caching front of the encoder) and fit the confidence calibrator."""
        from sklearn.linear_model import LogisticRegression

        texts, lab = cls.phrases(spec)
        n_intents = len(spec.intents)
        emb = (embed or encoder.encode)([clean_text(t) for t in texts])
        model = cls(spec, encoder, emb, lab)
        sims = emb @ emb.T
        sims[sims >= NEAR_DUPLICATE] = -1.0  # the phrase itself and its near-copies
        scores = _class_scores(sims, lab, n_intents + 1)
        best, _ = _features(scores, n_intents)
        # One row per phrase and intent, as classify scores them: right only for the phrase's own intent when it
        # also wins (an out-of-scope phrase is never right), so near-ties and runner-ups learn low values.
        feats = _all_features(scores, n_intents).reshape(-1, 3)
        truth = ((np.arange(n_intents)[None, :] == lab[:, None]) & (best == lab)[:, None]).astype(int).reshape(-1)
        if truth.min() == truth.max():
            raise ValueError("cannot calibrate: every example is classified the same way; add out-of-scope phrases")
        reg = LogisticRegression(C=10.0, max_iter=1000, class_weight={1: IN_SCOPE_WEIGHT, 0: 1.0}).fit(feats, truth)
        model.coef = reg.coef_[0].astype(np.float64)
        model.intercept = float(reg.intercept_[0])
        in_scope = lab < n_intents
        model.loo_accuracy = float((best == lab)[in_scope].mean())
        log.info(
            "intent classifier built: %d intents, %d examples, %d out-of-scope, leave-one-out accuracy %.3f",
            n_intents,
            int(in_scope.sum()),
            int((~in_scope).sum()),
            model.loo_accuracy,
        )
        return model

    def _prob(self, feats: np.ndarray) -> np.ndarray:
        z = feats @ self.coef + self.intercept
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def classify_many(self, texts: Sequence[str]) -> list[IntentResult]:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"text must be str, not {type(text).__name__}")
        cleaned = [clean_text(t) for t in texts]
        return self.classify_vectors(self.encoder.encode([c or "." for c in cleaned]), cleaned)

    def classify_vectors(self, emb: np.ndarray, cleaned: Sequence[str]) -> list[IntentResult]:
        """Results for already embedded texts (``cleaned``: only whether each was empty matters)."""
        n_intents = len(self.spec.intents)
        names = self.spec.names
        scores = _class_scores(emb @ self.embeddings.T, self.labels, n_intents + 1)
        results = []
        for row, text in zip(scores, cleaned, strict=True):
            order = np.argsort(-row[:n_intents])
            oos = float(max(row[n_intents], 0.0))
            probs = self._prob(_all_features(row[None, :], n_intents)[0])
            probs = probs if text else np.zeros_like(probs)
            ranked = [(names[c], round(float(probs[c]), 4)) for c in order[: 1 + _N_ALTERNATIVES]]
            (intent, confidence), rest = ranked[0], ranked[1:]
            results.append(IntentResult(intent, confidence, rest, oos))
        return results

    def classify(self, text: str) -> IntentResult:
        return self.classify_many([text])[0]


def clean_text(text: str) -> str:
    """Lower case, no punctuation: what the encoder sees (callers and ASR punctuate at random)."""
    return " ".join(_NON_WORD.sub(" ", text.lower().replace("\u2019", "'")).split())


class IntentModels:
    """One sentence encoder per process and one classifier per intent spec (so per flow), built on first use.

    Phrase embeddings are kept in memory (flows share libraries, so a shared phrase is embedded once) and, with
    ``cache_dir``, on disk keyed by the model and the phrase, so a restart or an edited flow re-embeds only what
    changed.
    """

    def __init__(
        self, encoder: Encoder | None = None, model_dir: Path | None = None, cache_dir: Path | None = None
    ) -> None:
        self._encoder = encoder
        self._model_dir = model_dir
        self._cache_dir = cache_dir
        self._built: dict[str, IntentClassifier] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def encoder(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                from models.embeddings import SentenceEncoder

                self._encoder = SentenceEncoder(self._model_dir)
            return self._encoder

    def _disk_file(self) -> Path | None:
        return self._cache_dir / "phrase-embeddings-minilm-l6.npz" if self._cache_dir is not None else None

    def _load_disk(self) -> None:
        path = self._disk_file()
        if path is None or self._vectors or not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                self._vectors.update(zip((str(t) for t in data["texts"]), data["vectors"], strict=True))
        except (OSError, ValueError, KeyError):  # a truncated or foreign file: embed again and overwrite it
            log.warning("unreadable phrase embedding cache %s; rebuilding it", path, exc_info=True)

    def _save_disk(self) -> None:
        path = self._disk_file()
        if path is None or not self._vectors:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # A file of its own per process: nodes of a fleet may share the cache directory.
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        texts = list(self._vectors)
        np.savez(tmp, texts=np.array(texts), vectors=np.stack([self._vectors[t] for t in texts]))
        tmp.replace(path)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of phrases, from the caches where known."""
        encoder = self.encoder
        with self._lock:
            self._load_disk()
            missing = sorted({t for t in texts if t not in self._vectors})
        if missing:
            fresh = encoder.encode(missing)
            with self._lock:
                self._vectors.update(zip(missing, fresh, strict=True))
                self._save_disk()
        with self._lock:
            return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def classifier(self, spec: IntentSpec) -> IntentClassifier:
        key = spec.sha256
        with self._lock:
            found = self._built.get(key)
        if found is not None:
            return found
        built = IntentClassifier.build(spec, self.encoder, self.embed)
        with self._lock:
            return self._built.setdefault(key, built)


# --- when to act on an intent ------------------------------------------------------------------------

Industry = Literal["general", "ecommerce", "telecom", "finance", "healthcare"]
ANSWER_THRESHOLD = 0.85
"""Calibrated confidence needed to act on an intent without clarifying."""
REGULATED_ANSWER_THRESHOLD = 0.92
"""The same in regulated industries, where acting on a misunderstanding costs more."""
REGULATED_INDUSTRIES: frozenset[str] = frozenset({"finance", "healthcare"})


def answer_threshold(*industries: str) -> float:
    """The one threshold rule: 0.92 when any of the given industries is regulated, else 0.85.

    Several industries (the flow's and the deployment's) give the strictest threshold of them.
    """
    regulated = any(industry in REGULATED_INDUSTRIES for industry in industries)
    return REGULATED_ANSWER_THRESHOLD if regulated else ANSWER_THRESHOLD


def decide(result: IntentResult, threshold: float) -> Literal["answer", "clarify"]:
    """Act on the intent only when its calibrated confidence reaches the threshold (see `answer_threshold`)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return "answer" if result.confidence >= threshold else "clarify"


# --- yes / no -----------------------------------------------------------------------------------------

_NO_PATTERNS = re.compile(
    r"\b(?:no|nope|nah|naw|negative|incorrect|wrong|not (?:right|correct|it|that|really|quite)"
    r"|isn't|is not|don't|do not|no way|not at all|(?:absolutely|definitely|certainly|of course|surely) not|mistake)\b"
)
# "not right", "isn't correct": the negated word must not count as a yes.
_NEGATED_WORD = re.compile(
    r"\b(?:(?:absolutely|definitely|certainly|of course|surely) not\b|(?:not|isn't|aren't|wasn't|ain't|never)\s+\w+)"
)
_UNSURE_PATTERNS = re.compile(r"\b(?:not sure|unsure|don't know|do not know|dunno|maybe|perhaps|not certain)\b")
_YES_PATTERNS = re.compile(
    r"\b(?:yes|yeah|yea|yep|yup|ya|aye|correct|right|exactly|sure|affirmative|ok|okay|absolutely"
    r"|definitely|of course|that's it|that is it|please do|go ahead|sounds good|indeed|true|uh huh|mhm)\b"
)


def parse_yes_no(text: str) -> bool | None:
    """Confirmation answer: True for yes, False for no, None when unclear or mixed ("yes... no wait")."""
    t = " ".join(_NON_WORD.sub(" ", text.lower().replace("\u2019", "'")).split())
    if not t or _UNSURE_PATTERNS.search(t):
        return None
    negative = bool(_NO_PATTERNS.search(t))
    positive = bool(_YES_PATTERNS.search(_NEGATED_WORD.sub(" ", t)))
    if negative and not positive:
        return False
    if positive and not negative:
        return True
    return None
