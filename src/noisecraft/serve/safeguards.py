"""Safeguards: bearer API keys with per-key rate limits, a prompt filter with normalised matching (refusals are
logged), and the image-checker hook."""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata

log = logging.getLogger("noisecraft.serve")

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


def normalise(text: str) -> str:
    """Lower-case words of `text` for matching: Unicode NFKC then accents dropped (NFKD without combining marks),
    case folded, common digit/symbol substitutions undone (0->o, 1->i, 3->e, 4->a, 5->s, 7->t, @->a, $->s),
    every other non-letter a space, runs of spaces one."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold().translate(_LEET)
    return " ".join(re.sub(r"[^\w]|_|\d", " ", text).split())


class PromptFilter:
    """Refuses prompts containing a blocked term (each normalised, `normalise`): a run of whole words that spells
    the term with the spaces removed, so 'forbidden thing', 'b a d' and 'b.a.d' match 'bad' but 'badger' does
    not."""

    def __init__(self, terms=()):
        self.terms = [t for t in (normalise(t) for t in terms) if t]

    def match(self, *texts: str | None) -> str | None:
        """The first blocked term found in any of texts, else None."""
        for text in texts:
            words = normalise(text or "").split()
            for term in self.terms:
                if _spells(words, term.replace(" ", "")):
                    return term
        return None

    def refusal(self, who: str, *texts: str | None) -> str | None:
        """The refusal message (logged) if a text is blocked, else None."""
        term = self.match(*texts)
        if term is None:
            return None
        log.warning("prompt refused for %s: matched blocked term %r", who, term)
        return "the prompt was refused by this server's prompt filter"


def _spells(words: list[str], target: str) -> bool:
    """Whether consecutive words joined without spaces equal target."""
    for i in range(len(words)):
        joined = ""
        for word in words[i:]:
            joined += word
            if joined == target:
                return True
            if len(joined) >= len(target) or not target.startswith(joined):
                break
    return False


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute on average, bursts up to max(1, per_minute / 6)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.burst = max(1.0, per_minute / 6.0)
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def wait_time(self, key: str) -> float:
        """0 if the key may make a request now (taking a token), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self.buckets[key] = (tokens - 1, now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer KEY` header, else None."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def check_images(checker, images, infos) -> list[str | None]:
    """The image checker's verdict on each (H, W, 3) uint8 image: None to keep it, else the reason to withhold it
    (a checker that raises withholds the image, so a broken checker never lets images through)."""
    if checker is None:
        return [None] * len(images)
    out = []
    for image, info in zip(images, infos):
        try:
            verdict = checker(image, info)
        except Exception as e:  # noqa: BLE001 - any failure of a user hook withholds the image
            log.error("image checker failed: %s", e)
            verdict = f"the image checker failed: {type(e).__name__}"
        out.append(None if verdict is None else str(verdict))
    return out


def load_checker(spec: str):
    """'module:function' -> the function (an image checker, `check_images`)."""
    import importlib

    from noisecraft.errors import NoisecraftError

    module, _, name = spec.partition(":")
    if not module or not name:
        raise NoisecraftError(f"--image-checker takes MODULE:FUNCTION, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise NoisecraftError(f"--image-checker {spec!r}: {e}") from None
