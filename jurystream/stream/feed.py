"""The demo's own feed: synthetic social posts with gold labels, and some deliberately bad input.

Written here so the demo runs with no dataset at all. The posts mix plainly friendly, plainly
abusive and ambiguous (sarcastic, quoted, negated) phrasing so a small jury both agrees and
disagrees, which is what exercises the review path.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from jurystream.stream.records import Post

LABELS = ("not-offensive", "offensive")

_SUBJECTS = [
    "this game",
    "the new update",
    "your post",
    "the referee",
    "my coffee",
    "the mayor",
    "that movie",
    "the concert",
    "this thread",
    "the weather",
    "our team",
    "the app",
]
# Wide vocabularies: a small seed set sees only part of them, so unseen words leave the jury
# unsure, and the reviewed cases teach the jurors the rest (the continual-learning loop).
_GOOD_WORDS = [
    "great",
    "lovely",
    "helpful",
    "amazing",
    "underrated",
    "fun",
    "brilliant",
    "perfect",
    "wonderful",
    "charming",
    "delightful",
    "superb",
    "gorgeous",
    "clever",
    "inspiring",
    "fantastic",
    "kind",
    "cozy",
    "elegant",
    "refreshing",
    "solid",
    "stellar",
    "sweet",
    "thoughtful",
    "uplifting",
    "wholesome",
    "excellent",
    "neat",
]
_BAD_WORDS = [
    "trash",
    "pathetic",
    "garbage",
    "idiotic",
    "disgraceful",
    "worthless",
    "moronic",
    "disgusting",
    "stupid",
    "braindead",
    "pitiful",
    "vile",
    "dumb",
    "repulsive",
    "clownish",
    "brainless",
    "scummy",
    "filthy",
    "loathsome",
    "imbecilic",
    "rotten",
    "despicable",
    "foul",
    "wretched",
    "sleazy",
    "dimwitted",
    "slimy",
    "crappy",
]
_KIND = [f"{verb} {w}" for verb in ("is", "looks", "was") for w in _GOOD_WORDS]
_MEAN = [f"{verb} {w}" for verb in ("is", "looks", "was") for w in _BAD_WORDS]
_INSULTS = ["you idiot", "you moron", "shut up", "loser", "you clown", "pathetic fool"]
_FRIENDLY = [
    "thanks friend",
    "love you all",
    "have a nice day",
    "well done",
    "so proud",
    "cheers mate",
]
_AMBIGUOUS = [
    "not saying {s} is trash but",
    "people calling {s} stupid are wrong,",
    "lol {s} killed it, absolutely brutal",
    "{s} is so bad it's good",
    "can't believe how sick {s} is",
    "my brother said {s} is for idiots, rude",
]
_TAGS = ["#live", "#news", "#sports", "#music", "", "", ""]


@dataclass(frozen=True)
class FeedItem:
    """One message for the posts topic: its key and raw value, and the truth behind it."""

    key: bytes
    value: bytes
    gold: str | None  # None for deliberately bad messages
    bad_reason: str | None = None


def make_post(rng: random.Random) -> tuple[str, str]:
    """One synthetic post and its gold label."""
    subject = rng.choice(_SUBJECTS)
    roll = rng.random()
    tag = rng.choice(_TAGS)
    if roll < 0.4:
        text = f"{subject} {rng.choice(_KIND)}, {rng.choice(_FRIENDLY)} {tag}"
        label = LABELS[0]
    elif roll < 0.75:
        text = f"{subject} {rng.choice(_MEAN)}, {rng.choice(_INSULTS)} {tag}"
        label = LABELS[1]
    else:
        text = f"{rng.choice(_AMBIGUOUS).format(s=subject)} {rng.choice(_KIND + _MEAN)} {tag}"
        label = LABELS[1] if any(w in text for w in ("rude", "trash but", "idiots")) else LABELS[0]
    return text.strip(), label


_BAD: list[tuple[str, bytes]] = [
    ("not JSON", b"this is not json {"),
    ("no text", b'{"id": "@ID@", "body": "hello"}'),
    ("empty text", b'{"id": "@ID@", "text": "   "}'),
    ("wrong type", b'{"id": "@ID@", "text": 42}'),
    ("invalid UTF-8", b'{"id": "@ID@", "text": "caf\xe9"}'),
    ("JSON list", b'["@ID@", "a list"]'),
    ("raw binary", bytes(range(256))),
]


def generate_posts(
    n: int, seed: int = 0, bad_every: int = 0, id_prefix: str = "post"
) -> Iterator[FeedItem]:
    """``n`` messages; every ``bad_every``-th one (if > 0) is malformed in a rotating way."""
    rng = random.Random(seed)
    for i in range(n):
        post_id = f"{id_prefix}-{i:06d}"
        if bad_every and i % bad_every == bad_every - 1:
            reason, raw = _BAD[(i // bad_every) % len(_BAD)]
            yield FeedItem(post_id.encode(), raw.replace(b"@ID@", post_id.encode()), None, reason)
            continue
        text, label = make_post(rng)
        value = Post.of(post_id, text, meta={"gold": label}).to_bytes()
        yield FeedItem(post_id.encode(), value, label)


def posts_from_dataset(
    texts: Sequence[str], golds: Sequence[str], id_prefix: str = "post"
) -> Iterator[FeedItem]:
    """A user's labeled texts as posts carrying their gold label (for the oracle and accuracy)."""
    for i, (text, gold) in enumerate(zip(texts, golds, strict=True)):
        post_id = f"{id_prefix}-{i:06d}"
        value = Post.of(post_id, text, meta={"gold": gold}).to_bytes()
        yield FeedItem(post_id.encode(), value, gold)


def labeled_examples(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """A seed set for bootstrapping jurors on the generated feed: texts and label ids."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        text, label = make_post(rng)
        texts.append(text)
        labels.append(LABELS.index(label))
    return texts, labels
