"""The trainer's durable memory: a SQLite file under the data directory.

Why SQLite: the trainer must survive restarts without re-reading the topics from the start
(Kafka retention may have dropped the early hard samples, and the seed set is not on a topic),
it needs a few joins (hard samples ⋈ gold feedback for reviewer reliability) and it is one
process, so a file with transactions is all it takes. The role commits its Kafka offsets only
after the records are in this file, and every insert is idempotent (keyed by origin and message
id), so an at-least-once replay changes nothing.

Tables: ``examples`` (seed, hard and gold-with-text training examples; ``round`` is the round
that first trained on it, NULL while new, 0 for the seed set), ``gold`` (every gold label, for
overrides, reliability and the held-out gate set), ``audits`` (the jury's label against the
reviewer's on audited posts, for the threshold controller), ``rounds`` and ``candidates`` (what each
round did: per juror the outcome, version, metrics and the gate's reason).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jurystream.models.rules.continual import Example, held_out
from jurystream.models.training.datasets import LabeledSet

SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    origin TEXT NOT NULL,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    confidence REAL NOT NULL,
    added_at REAL NOT NULL,
    round INTEGER,
    PRIMARY KEY (origin, id)
);
CREATE INDEX IF NOT EXISTS examples_round ON examples (round);
CREATE TABLE IF NOT EXISTS gold (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    text TEXT,
    holdout INTEGER NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audits (
    id TEXT PRIMARY KEY,
    jury_label TEXT NOT NULL,
    label TEXT NOT NULL,
    threshold REAL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    trigger TEXT NOT NULL,
    new_examples INTEGER NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    round INTEGER NOT NULL,
    juror TEXT NOT NULL,
    parent TEXT,
    outcome TEXT NOT NULL,
    version TEXT,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL,
    serving_metrics TEXT NOT NULL,
    training TEXT NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (round, juror)
);
"""


@dataclass(frozen=True)
class CandidateRecord:
    """One juror's result in one round, as stored (and as ``candidates()`` returns it)."""

    round: int
    juror: str
    parent: str | None
    outcome: str  # promoted | rejected | failed
    version: str | None
    reason: str
    metrics: dict[str, Any]
    serving_metrics: dict[str, Any]
    training: dict[str, Any]
    seconds: float


class TrainingStore:
    """SQLite-backed examples, gold labels and round history (one short connection per call).

    A connection per call keeps the store usable from the consumer loop and the training
    thread at once; WAL mode lets the round read while new samples are written.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # -- writing -----------------------------------------------------------------------------

    def add_seed(self, seed: LabeledSet) -> int:
        """Import the seed set once (ids ``seed:<n>``); it counts as already trained on."""
        rows = [
            ("seed", f"seed:{i}", text, seed.label_names[y], "seed", 1.0, time.time(), 0)
            for i, (text, y) in enumerate(zip(seed.texts, seed.labels, strict=True))
        ]
        with self._db() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            return db.total_changes - before

    def add_hard_samples(self, samples: Iterable[Example]) -> int:
        """Insert or refresh hard samples; a replayed one keeps its round (it is not new again)."""
        rows = [
            (s.origin, s.id, s.text, s.label, s.source, s.confidence, time.time()) for s in samples
        ]
        with self._db() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO examples (origin, id, text, label, source, confidence, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (origin, id) DO UPDATE SET "
                "text = excluded.text, label = excluded.label, source = excluded.source, "
                "confidence = excluded.confidence",
                rows,
            )
            return db.total_changes - before

    def add_audits(self, outcomes: Iterable[tuple[str, str, str, float | None]]) -> None:
        """Audit outcomes (id, jury label, reviewer label, serving threshold); idempotent."""
        with self._db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO audits VALUES (?, ?, ?, ?, ?)",
                [(i, j, y, t, time.time()) for i, j, y, t in outcomes],
            )

    def audit_outcomes(
        self, threshold: float | None = None, since: float = 0.0
    ) -> list[tuple[str, str]]:
        """(jury label, reviewer label) of the audits made at ``threshold`` (or all) and stored
        at or after ``since`` (a time.time()), oldest first: what the controller compares with
        the accuracy the gold set predicted."""
        query = "SELECT jury_label, label FROM audits WHERE added_at >= ?"
        args: tuple[Any, ...] = (since,)
        if threshold is not None:
            query, args = query + " AND abs(threshold - ?) < 1e-6", (*args, threshold)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY added_at, id", args).fetchall()
        return [(str(j), str(y)) for j, y in rows]

    def add_gold(self, post_id: str, label: str, text: str | None, holdout_share: float) -> None:
        """A gold label; with its text it is also a training example or a held-out one."""
        holdout = text is not None and held_out(post_id, holdout_share)
        with self._db() as db:
            db.execute(
                "INSERT INTO gold VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "label = excluded.label, text = coalesce(excluded.text, gold.text)",
                (post_id, label, text, int(holdout), time.time()),
            )
            if text is not None and not holdout:
                db.execute(
                    "INSERT INTO examples (origin, id, text, label, source, confidence, added_at) "
                    "VALUES ('gold', ?, ?, ?, 'gold', 1.0, ?) ON CONFLICT (origin, id) "
                    "DO UPDATE SET label = excluded.label",
                    (post_id, text, label, time.time()),
                )

    # -- reading -----------------------------------------------------------------------------

    def _examples(self, where: str, args: tuple[Any, ...] = ()) -> list[Example]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, text, label, origin, source, confidence FROM examples "
                f"WHERE {where} ORDER BY added_at, id",
                args,
            ).fetchall()
        return [Example(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]

    def new_examples(self) -> list[Example]:
        """Examples no round has trained on yet (hard samples and gold with text)."""
        return self._examples("round IS NULL")

    def earlier_examples(self) -> list[Example]:
        """The replay pool: the seed set and what earlier rounds trained on."""
        return self._examples("round IS NOT NULL")

    def pending_hard_samples(self) -> int:
        """New reviewed samples (hard and audit) since the last round (β counts these)."""
        with self._db() as db:
            (n,) = db.execute(
                "SELECT count(*) FROM examples WHERE origin IN ('hard', 'audit') AND round IS NULL"
            ).fetchone()
        return int(n)

    def reviewed_samples(self) -> int:
        """Reviewed samples (hard and audit) stored so far."""
        with self._db() as db:
            (n,) = db.execute(
                "SELECT count(*) FROM examples WHERE origin IN ('hard', 'audit')"
            ).fetchone()
        return int(n)

    def round_running(self) -> bool:
        with self._db() as db:
            (n,) = db.execute("SELECT count(*) FROM rounds WHERE status = 'running'").fetchone()
        return bool(n)

    def gold_labels(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT id, label FROM gold").fetchall())

    def holdout(self) -> list[tuple[str, str]]:
        """(text, label) of the held-out gold feedback (never trained on)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT text, label FROM gold WHERE holdout = 1 AND text IS NOT NULL ORDER BY id"
            ).fetchall()
        return [(str(t), str(y)) for t, y in rows]

    def reviewer_agreement(self) -> dict[str, tuple[int, int]]:
        """Per label source: (hard samples whose label matched gold feedback, judged ones)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT e.source, sum(e.label = g.label), count(*) FROM examples e "
                "JOIN gold g ON g.id = e.id WHERE e.origin IN ('hard', 'audit') GROUP BY e.source"
            ).fetchall()
        return {str(s): (int(a), int(n)) for s, a, n in rows}

    # -- rounds ------------------------------------------------------------------------------

    def begin_round(self, trigger: str, new_examples: int) -> int:
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO rounds (started_at, trigger, new_examples, status) "
                "VALUES (?, ?, ?, 'running')",
                (time.time(), trigger, new_examples),
            )
            assert cursor.lastrowid is not None
            return int(cursor.lastrowid)

    def mark_trained(self, examples: Iterable[Example], round_id: int) -> None:
        """These examples were new in ``round_id``: from now on they are replay material."""
        with self._db() as db:
            db.executemany(
                "UPDATE examples SET round = ? WHERE origin = ? AND id = ? AND round IS NULL",
                [(round_id, e.origin, e.id) for e in examples],
            )

    def record_candidate(self, record: CandidateRecord) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.round,
                    record.juror,
                    record.parent,
                    record.outcome,
                    record.version,
                    record.reason,
                    json.dumps(record.metrics),
                    json.dumps(record.serving_metrics),
                    json.dumps(record.training),
                    record.seconds,
                ),
            )

    def finish_round(self, round_id: int, status: str) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE rounds SET finished_at = ?, status = ? WHERE id = ?",
                (time.time(), status, round_id),
            )

    def last_round_started(self) -> float | None:
        with self._db() as db:
            (started,) = db.execute("SELECT max(started_at) FROM rounds").fetchone()
        return None if started is None else float(started)

    def candidates(self, round_id: int | None = None) -> list[CandidateRecord]:
        """What rounds did, oldest first (all rounds, or one)."""
        query = "SELECT * FROM candidates"
        args: tuple[Any, ...] = ()
        if round_id is not None:
            query += " WHERE round = ?"
            args = (round_id,)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY round, juror", args).fetchall()
        return [
            CandidateRecord(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                json.loads(r[6]),
                json.loads(r[7]),
                json.loads(r[8]),
                float(r[9]),
            )
            for r in rows
        ]
