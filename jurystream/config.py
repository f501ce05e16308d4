"""The one settings object.

Precedence, highest first: CLI flags (applied by the CLI as overrides), environment variables
``JURYSTREAM_*`` (nested with ``__``, e.g. ``JURYSTREAM_JURY__POLICY=majority``), the TOML
config file named by ``JURYSTREAM_CONFIG`` (default ``jurystream.toml`` if present), defaults.

Strict: a ``JURYSTREAM_*`` variable or TOML key that names no setting, and an empty variable,
stop the start with the nearest valid setting named. A typo silently ignored costs more than a
refused start (a misspelt budget is no budget at all).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


PolicyName = Literal["unanimous", "majority", "weighted", "threshold", "cascade"]


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
# OAUTHBEARER is left out: aiokafka needs a token-provider object (an OIDC client of its own),
# which no setting can describe.
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class BrokerSettings(_Section):
    """Where Kafka is and how to reach it. No bootstrap address: start the embedded Tansu broker.

    Secrets are never setting values (settings are printed and logged): a setting names the
    environment variable or the file that holds them (``jurystream/stream/security.py``).
    """

    bootstrap: str | None = None
    embedded_port: int = 0  # 0: pick a free loopback port
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 0.6
    request_timeout_s: float = 30.0
    # Longest a fetch may wait for records, and how long a producer lingers to fill a batch:
    # the worker's latency lives on both. Tansu holds every fetch for the whole wait, so each
    # hop adds up to it: p99 at 25 % load 35 ms at 20 ms, 76 ms at 50 ms, for 6 % of a core of
    # idle polling on the broker instead of 3 % (BENCHMARKS.md). A real Kafka answers as soon
    # as records arrive: there the wait only sets how often an idle consumer polls.
    fetch_max_wait_ms: int = Field(20, ge=0)
    linger_ms: int = Field(2, ge=0)
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    # The SASL password: read from this variable, or from this file (the file wins if set).
    sasl_password_env: str = "JURYSTREAM_KAFKA_PASSWORD"
    sasl_password_file: Path | None = None
    # CA bundle the brokers' certificates are checked against; None: the system's CAs.
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None  # client certificate (mTLS)
    ssl_keyfile: Path | None = None  # its private key
    # Password of an encrypted private key: from this variable, or from this file.
    ssl_key_password_env: str = "JURYSTREAM_KAFKA_KEY_PASSWORD"
    ssl_key_password_file: Path | None = None
    # Opt-out for test brokers whose certificate names another host; never in production.
    ssl_check_hostname: bool = True


class Topic(StrEnum):
    """Every topic jurystream reads or writes, by its one name: the ``TopicSettings`` field that
    configures it (``settings.topics.name(Topic.DEAD_LETTERS)`` → ``jurystream.dead-letters``).
    """

    POSTS = "posts"
    LABELS = "labels"
    REVIEW = "review"
    HARD_SAMPLES = "hard_samples"
    FEEDBACK = "feedback"
    DEAD_LETTERS = "dead_letters"
    MODEL_UPDATES = "model_updates"
    SPEND = "spend"


class TopicSettings(_Section):
    prefix: str = "jurystream."
    partitions: int = 4
    replication_factor: int = 1
    posts: str = "posts"
    labels: str = "labels"
    review: str = "review"
    hard_samples: str = "hard-samples"
    feedback: str = "feedback"
    dead_letters: str = "dead-letters"
    model_updates: str = "model-updates"
    # Reviewer spend, one compacted record per replica: the budget all replicas share.
    spend: str = "spend"

    def name(self, topic: Topic) -> str:
        """Full topic name: the prefix and the configured base name of ``topic``."""
        return self.prefix + str(getattr(self, Topic(topic).value))

    def all_names(self) -> list[str]:
        """The topics the roles create at start; ``spend`` is created, compacted, by the
        reviewers that share a budget (``stream/spend.py``)."""
        return [self.name(t) for t in Topic if t is not Topic.SPEND]


class JurySettings(_Section):
    policy: PolicyName = "unanimous"
    # Minimum confidence a vote (or the policy's combined vote) needs to be accepted.
    threshold: float = Field(0.7, ge=0.0, le=1.0)
    # Per-juror thresholds calibrated by `jurystream models eval --calibrate`; override `threshold`.
    thresholds_file: Path | None = None
    # Juror weights for the weighted policy, by juror name; missing jurors weigh 1.
    weights: dict[str, float] = Field(default_factory=dict)
    # Juror directories, or names looked up in the registry (serving version).
    jurors: list[str] = Field(default_factory=list)
    batch_size: int = Field(32, ge=1)
    # A batch is what is already fetched when the worker is free (stream/batching.py); this
    # only cuts one whose queue keeps refilling.
    batch_timeout_s: float = Field(0.05, gt=0)
    # onnxruntime intra-op threads per juror session. 1: a juror's chunks are too small to split
    # inside an operator; the cores go to inference_threads instead (models/serving/parallel.py).
    threads: int = Field(1, ge=1)
    # Threads scoring a batch (jurors side by side, chunks over cores). None: the cores this
    # process may use (CPU affinity and cgroup quota).
    inference_threads: int | None = Field(None, ge=1)
    max_text_chars: int = Field(4000, ge=1)
    max_message_bytes: int = Field(64_000, ge=1)
    # Share of confidently labeled posts also sent to review as audits: the jury's label
    # stands, the review measures it (unbiased accuracy of accepted labels, random examples).
    audit_rate: float = Field(0.02, ge=0.0, le=1.0)
    # Most reviews per post read (escalations; audits come on top). None: every escalation is
    # reviewed. Past it, the most informative escalations go first; the rest keep the jury's
    # best guess, flagged "unreviewed". The threshold controller also keeps escalation under it.
    review_budget: float | None = Field(None, ge=0.0, le=1.0)


class TaskSettings(_Section):
    """One moderation policy of a multi-task deployment (``[tasks.<name>]``): its label set,
    the jurors that vote on it and how, and what the reviewer is told about it.

    A multi-label taxonomy is a set of yes/no tasks. A juror name may appear in several tasks:
    a multi-head juror (``onnx-multihead``) then serves each task from one encoder pass.
    """

    labels: list[str]
    descriptions: dict[str, str] = Field(default_factory=dict)
    # What the reviewer is asked for this task; None: "Label the post for <task>."
    instruction: str | None = None
    jurors: list[str]
    policy: PolicyName = "unanimous"
    threshold: float = Field(0.7, ge=0.0, le=1.0)
    weights: dict[str, float] = Field(default_factory=dict)
    # Labeled examples the reviewer's demonstrations for this task are drawn from (k-NN).
    gold_pool: Path | None = None
    # The trainer's data for this task, as ``trainer.seed_data`` / ``trainer.gold_data`` (same
    # splits, sizes and sample seed): the seed set its rounds replay, and the held-out gold its
    # gate and threshold controller judge on. Their labels are this task's label names.
    seed_data: str | None = None
    gold_data: str | None = None
    # Accuracy of accepted labels the controller holds for this task; None:
    # ``controller.target_accuracy`` (or the reviewer's measured accuracy minus the margin).
    target_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    # The label distribution this task's jurors were trained on (label -> count or share), as
    # ``metrics.drift_reference`` for one task; empty: the monitor's first full window.
    drift_reference: dict[str, float] = Field(default_factory=dict)

    def prompt(self, name: str) -> str:
        return self.instruction or f"Label the post for {name}."

    # Checked here rather than where they are used: a repeated label or a weight for a juror
    # the task does not have would otherwise be served quietly (votes split on a name that is
    # there twice, a weight that weighs nothing). Pydantic puts the task in front of each
    # message (``tasks.hate.labels``).
    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        if len(labels) < 2:
            raise ValueError(
                f"a task needs at least two labels, got {labels}: list them all, e.g. "
                'labels = ["not-hate", "hate"] for a yes/no task'
            )
        _distinct_names(labels, "label")
        return labels

    @field_validator("jurors")
    @classmethod
    def _jurors(cls, jurors: list[str]) -> list[str]:
        if not jurors:
            raise ValueError(
                "a task needs at least one juror: name them in jurors (registry "
                "names or juror directories; see `jurystream models list`)"
            )
        _distinct_names(jurors, "juror")
        return jurors

    @model_validator(mode="after")
    def _named_within(self) -> TaskSettings:
        stray = sorted(set(self.weights) - set(self.jurors))
        if stray:
            raise ValueError(
                f"weights names {stray}, not among this task's jurors {self.jurors}: weigh only "
                "the task's jurors (a juror left out weighs 1), or add it to jurors"
            )
        for field in ("descriptions", "drift_reference"):
            stray = sorted(set(getattr(self, field)) - set(self.labels))
            if stray:
                raise ValueError(
                    f"{field} names {stray}, not among this task's labels {self.labels}: "
                    "name only the task's labels (spelt as in labels)"
                )
        return self


def _distinct_names(names: list[str], what: str) -> None:
    """Refuse a blank or repeated ``what`` (label, juror) in a task's list."""
    if any(not name.strip() for name in names):
        raise ValueError(f"a {what} name is blank in {names}: remove it or name it")
    repeated = ", ".join(sorted({repr(name) for name in names if names.count(name) > 1}))
    if repeated:
        raise ValueError(f"{what} {repeated} listed more than once in {names}: list each once")


# What a task may be named, and the one name it may not take: the ``task`` metric label of a
# single-task deployment (``exporters.metrics.families.DEFAULT_TASK``).
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RESERVED_TASK = "default"


IN_FLIGHT_PER_SLOT = 4  # cases a reviewer holds per request slot unless max_in_flight says


class ReviewerSettings(_Section):
    # Tiers of the reviewer chain, cheapest first: "local", "openai", "oracle", "simulated".
    chain: list[str] = Field(default_factory=lambda: ["oracle"])
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never logged
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    # USD per 1M tokens, by model name: {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
    prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}
    )
    budget_per_hour_usd: float | None = None
    budget_per_day_usd: float | None = None
    # Window lengths of the two budgets (tests and simulations shorten them to seconds).
    budget_hour_window_s: float = Field(3600.0, gt=0)
    budget_day_window_s: float = Field(86400.0, gt=0)
    max_output_tokens: int = Field(64, ge=1)
    # Request shape. "auto" derives it from the model name: reasoning models (o1/o3/o4 series,
    # the gpt-5 family) take max_completion_tokens and only the default temperature; others
    # take max_tokens and temperature 0.
    token_limit_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    temperature: float | Literal["auto", "omit"] = "auto"
    # Output limit for reasoning models: their hidden reasoning tokens count against it, so
    # max_output_tokens' 64 would end most answers before they start.
    reasoning_output_tokens: int = Field(2048, ge=1)
    # "json_schema" (OpenAI structured outputs), "json_object" or "text" for endpoints
    # without response_format; the strict parser checks the answer in every case.
    response_format: Literal["json_schema", "json_object", "text"] = "json_schema"
    invalid_answer_retries: int = Field(2, ge=0)  # off-label answers asked again, then parked
    park_backoff_max_s: float = Field(30.0, gt=0)  # longest wait between retries of a parked case
    # Cases one reviewer process holds at once, parked ones included; fetching pauses when full.
    # None: IN_FLIGHT_PER_SLOT × concurrency. A case holds its place while its outputs are
    # written and until the loop settles it, so a limit equal to the concurrency left request
    # slots idle (bench scale: 0.54 of concurrency ÷ latency at concurrency 64 with 64).
    max_in_flight: int | None = Field(None, ge=1)
    # A case that failed this many times while other cases were answered is dead-lettered
    # (the endpoint works; it is this case it cannot answer). An outage dead-letters nothing.
    max_case_failures: int = Field(5, ge=1)
    knn_k: int = Field(4, ge=0)
    # Demonstrations per task in a multi-task call (one call for all of a post's escalated
    # tasks); None: knn_k. Demonstrations are most of a call's tokens and are paid per task:
    # at knn_k 4 one call for 2 / 3 / 4 tasks costs 0.77 / 0.69 / 0.64 of one call per task,
    # at 2: 0.61 / 0.52 / 0.48, at 1: 0.52 / 0.44 / 0.40 (tokens; `bench review-cost`,
    # BENCHMARKS.md "Multi-task review"). What fewer demonstrations cost in an LLM's accuracy
    # was not measured here, so the default keeps knn_k.
    multitask_knn_k: int | None = Field(None, ge=0)
    gold_pool: Path | None = None  # k-NN demonstrations: a TweetEval dir, .jsonl or .csv
    gold_pool_size: int = Field(500, ge=1)  # a small stratified sample of it
    knn_encoder: Path | None = None  # ONNX sentence encoder dir; None: TF-IDF over the pool
    local_model: str | None = None  # juror directory/name for the local ONNX tier
    local_threshold: float = 0.9
    simulated_accuracy: float = Field(0.9, ge=0.0, le=1.0)
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    task: str = "Label the social media post."

    @property
    def in_flight_limit(self) -> int:
        """``max_in_flight``, or enough cases that the next ones wait on a request slot."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return IN_FLIGHT_PER_SLOT * self.concurrency


class TrainerSettings(_Section):
    every_samples: int = Field(200, ge=1)  # β: a round every β new hard samples
    every_minutes: float = Field(30.0, gt=0)  # T: or every T minutes
    # Earlier examples (seed set, earlier rounds' reviewed samples) replayed per new one; None:
    # all of them, so a round's cost grows with the history; a ratio bounds it (`bench loop`
    # ran with 1.0 to keep rounds within a segment on 2 cores, BENCHMARKS.md).
    # epochs, learning_rate, replay_ratio: measured by `jurystream bench recipe` (one round
    # from the bench bootstrap, offensive, 249 reviewed posts, macro-F1 on 662 held-out val
    # posts, median of 2 seeds; BENCHMARKS.md "Refinement recipe"). Default 2 ep at 3e-5 with
    # replay all: 0.734 ± 0.005. lr 1e-4: 0.744 ± 0.008 (+1.0 points in one round); lr 1e-5:
    # 0.723. But over the six rounds of `bench loop` (oracle, 6,000 posts) 1e-4 gained +5.6
    # macro-F1 points against +7.3 at 3e-5: from round 2 on its candidates fell below the
    # serving jurors and the gate rejected them. So 3e-5 stays. 3 epochs: 0.738 (+0.5, within
    # the spread; 2 stay, cheaper); 1 epoch: 0.711. Replay 1.0: 0.735 (+0.2, within the
    # spread), replay 0: 0.725 (-0.9): replay all stays, a ratio only bounds a round's cost.
    replay_ratio: float | None = Field(None, ge=0.0)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = 3e-5
    gate_tolerance: float = Field(0.005, ge=0.0)
    threads: int = Field(1, ge=1)
    nice: int = Field(10, ge=0, le=19)
    # Jurors to refine (registry names); empty: every juror in the registry.
    jurors: list[str] = Field(default_factory=list)
    # Replay pool: the seed set the jurors were bootstrapped from (same source, size and
    # sample seed as `models bootstrap`, so it is the very same sample). None: no seed replay.
    seed_data: str | None = None
    seed_split: str = "train"
    seed_size: int = Field(400, ge=1)
    seed_sample: int = 0
    # Held-out gold set for the gate (never trained on): a dataset, plus the share of gold
    # feedback records that carry text which is held out (chosen by a hash of the id).
    gold_data: str | None = None
    gold_split: str = "val"
    gold_size: int = Field(1000, ge=1)
    feedback_holdout: float = Field(0.3, ge=0.0, le=1.0)
    gate_metric: Literal["accuracy", "macro_f1"] = "accuracy"
    # Prior belief in a reviewer's accuracy before gold feedback measures it (Beta prior).
    reliability_prior: float = Field(0.8, gt=0.0, lt=1.0)
    reliability_prior_strength: float = Field(10.0, gt=0.0)


class ControllerSettings(_Section):
    """The threshold controller (``models/rules/thresholds.py``), run by the trainer."""

    enabled: bool = True
    # Accuracy the jury's accepted labels must reach; None: the reviewer's measured accuracy
    # (gold feedback, else the reliability prior) minus ``margin``.
    target_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    margin: float = Field(0.05, ge=0.0, le=1.0)
    # Audits that weigh as much as the held-out gold in correcting the target (shrinkage).
    audit_shrink: int = Field(50, ge=0)
    # Audits judged before the audit alone may move the threshold between rounds.
    audit_min: int = Field(30, ge=1)


class MetricsSettings(_Section):
    port: int = 0  # 0: no HTTP endpoint
    host: str = "0.0.0.0"
    # Monitor role (labels ⋈ feedback): rolling windows, counted in joined samples / labels.
    quality_window: int = Field(500, ge=1)
    drift_window: int = Field(1000, ge=1)
    # Label distribution the jurors were trained on (label → count or share); empty: the
    # monitor's first full drift window is the reference.
    drift_reference: dict[str, float] = Field(default_factory=dict)
    join_capacity: int = Field(100_000, ge=1)  # unmatched labels (and gold) kept for the join
    publish_interval_s: float = Field(1.0, gt=0)  # how often rolling gauges and lag refresh


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JURYSTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
    )
    # The TOML file these settings were read from when one was named (`load_settings(FILE)`,
    # `--config`); None reads JURYSTREAM_CONFIG or ./jurystream.toml. A class attribute of a
    # subclass, not an environment variable: exporting it leaked one test's file into later ones.
    config_file: ClassVar[Path | None] = None

    app_id: str = "jurystream"
    data_dir: Path = Path("var")
    # Where TweetEval-style datasets live (the project's tests and benchmarks read ../shared/data).
    data_root: Path = Path("../shared/data")
    registry: str = ""  # registry location (path or fsspec URL); default <data_dir>/registry
    log_level: str = "WARNING"
    # Tries a message gets when it keeps crashing a role (worker, reviewer; counted on disk
    # under data_dir); then it is quarantined to dead-letters and its partition moves on.
    max_attempts: int = Field(3, ge=1)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    jury: JurySettings = Field(default_factory=JurySettings)
    reviewer: ReviewerSettings = Field(default_factory=ReviewerSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    # Several policies labeled on one stream (``[tasks.offensive]``, ``[tasks.hate]``, …). Empty:
    # one task, whose labels come from the jurors in ``jury`` (single-task records unchanged).
    tasks: dict[str, TaskSettings] = Field(default_factory=dict)

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: dict[str, TaskSettings]) -> dict[str, TaskSettings]:
        for name in tasks:
            # A task name becomes a file name (trainer-<task>.sqlite), part of a record key
            # (<id>#<task>), a metric label value and a JSON-schema property the LLM answers.
            if not TASK_NAME.fullmatch(name):
                raise ValueError(
                    f"task name {name!r} cannot be used: name each [tasks.<name>] with letters, "
                    "digits, '-' or '_' (at most 64, starting with a letter or digit), "
                    "e.g. [tasks.hate]"
                )
            if name == RESERVED_TASK:
                raise ValueError(
                    f"task name {name!r} is what metrics call the one task of a single-task "
                    "deployment: name the task after its policy, e.g. [tasks.offensive]"
                )
        by_case = [n for n in tasks if n.lower() in {m.lower() for m in tasks if m != n}]
        if by_case:  # one store file on a case-insensitive file system
            raise ValueError(f"task names {by_case} differ only in case: rename one of them")
        return tasks

    @model_validator(mode="after")
    def _one_way_to_name_jurors(self) -> Settings:
        """With ``[tasks]`` each task names its own jurors, weights and threshold; the
        single-task ``jury`` settings for them would be ignored, so they are refused."""
        if not self.tasks:
            return self
        given = [
            f"jury.{name}"
            for name in ("jurors", "weights", "thresholds_file")
            if getattr(self.jury, name)
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} set together with [tasks] ({', '.join(self.tasks)}), which "
                "name their own: move them into each task (tasks.<name>.jurors, "
                "tasks.<name>.weights, tasks.<name>.threshold) and unset "
                f"{', '.join(given)} (also --juror and {env_var('jury.jurors')})"
            )
        return self

    @property
    def registry_url(self) -> str:
        return self.registry or str(self.data_dir / "registry")

    def role_env(self) -> dict[str, str]:
        """What a role started as a child process needs to read the same config file."""
        config_file = _config_file(type(self))
        return {"JURYSTREAM_CONFIG": str(config_file)} if config_file.is_file() else {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = _config_file(settings_cls)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml: dict[str, Any] = {}
        if config_file.is_file():
            try:
                toml = tomllib.loads(config_file.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{config_file} is not valid TOML: {exc}") from exc
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        init = getattr(init_settings, "init_kwargs", {})
        secrets = _secret_variables(init, toml)
        problems = unknown_settings(os.environ, toml, str(config_file), secrets)
        if problems:
            raise SettingsError("; ".join(problems))
        return tuple(sources)


def _config_file(settings_cls: type[BaseSettings]) -> Path:
    named = getattr(settings_cls, "config_file", None)
    return named or Path(os.environ.get("JURYSTREAM_CONFIG", "jurystream.toml"))


class SettingsError(ValueError):
    """Settings that name no field, or empty variables: refused at start, with the fix."""


# JURYSTREAM_* variables that are not settings: the project reads them itself.
OWN_VARIABLES = frozenset({"JURYSTREAM_CONFIG", "JURYSTREAM_TANSU_BIN", "JURYSTREAM_MODELS_DIR"})
PREFIX = "JURYSTREAM_"


# Settings that name the variable holding a secret: (section, its model, field). The variables
# they name may carry the JURYSTREAM_ prefix without being settings themselves.
SECRET_VARIABLE_SETTINGS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("reviewer", ReviewerSettings, "api_key_env"),
    ("broker", BrokerSettings, "sasl_password_env"),
    ("broker", BrokerSettings, "ssl_key_password_env"),
)


def _secret_variable(
    init: Mapping[str, Any],
    toml: Mapping[str, Any],
    section: str,
    model: type[BaseModel],
    field: str,
) -> str:
    """The variable a secret is read from, as init kwargs, TOML, environment or default say."""
    given = init.get(section)
    if isinstance(given, BaseModel):
        return str(getattr(given, field))
    for table in (given, toml.get(section)):
        if isinstance(table, Mapping) and isinstance(table.get(field), str):
            return str(table[field])
    from_env = os.environ.get(f"{PREFIX}{section.upper()}__{field.upper()}")
    return from_env or str(model.model_fields[field].default)


def _secret_variables(init: Mapping[str, Any], toml: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(_secret_variable(init, toml, *setting) for setting in SECRET_VARIABLE_SETTINGS)


def env_var(setting: str) -> str:
    """The environment variable of a dotted setting: ``broker.bootstrap`` →
    ``JURYSTREAM_BROKER__BOOTSTRAP`` (the CLI shows it next to the option that sets it)."""
    return PREFIX + setting.upper().replace(".", "__")


def _lookup(path: list[str]) -> str | None:
    """None if ``path`` names a setting (or a key inside a dict setting), else the dotted
    prefix of it that is unknown."""
    model: Any = Settings
    for depth, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            return ".".join(path[: depth + 1])
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        # A plain field: only dict settings (weights, prices, …) have keys below them.
        return None if depth == len(path) - 1 or "dict" in str(annotation) else ".".join(path)
    return None


def _all_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        out.append(prefix + name)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _all_paths(annotation, f"{prefix}{name}.")
    return out


def _hint(unknown: str) -> str:
    paths = _all_paths(Settings)
    near = difflib.get_close_matches(unknown, paths, n=1, cutoff=0.6)
    if not near:  # a field put in the wrong section: match its own name in every section
        by_name = {p.rsplit(".", 1)[-1]: p for p in paths}
        names = difflib.get_close_matches(unknown.rsplit(".", 1)[-1], by_name, n=1, cutoff=0.6)
        near = [by_name[n] for n in names]
    if near:
        return f"; did you mean {near[0]}?"
    return "; see the configuration reference in the README"


def unknown_settings(
    environ: Mapping[str, str],
    toml: Mapping[str, Any],
    toml_name: str,
    secret_variables: Collection[str] = (),
) -> list[str]:
    """Every unknown or empty setting in the environment and the TOML file, each with a fix."""
    problems = []
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in OWN_VARIABLES or name in secret_variables:
            continue
        path = upper.removeprefix(PREFIX).lower().split("__")
        unknown = _lookup(path)
        dotted = ".".join(path)
        if unknown is not None:
            problems.append(f"unknown setting {dotted} ({name}){_hint(dotted)}")
        elif value == "":
            problems.append(f"{name} is set but empty: unset it, or give {dotted} a value")

    def walk(table: Mapping[str, Any], prefix: list[str]) -> None:
        for key, value in table.items():
            path = [*prefix, str(key)]
            unknown = _lookup(path)
            if unknown is not None:
                dotted = ".".join(path)
                problems.append(f"unknown setting {dotted} in {toml_name}{_hint(dotted)}")
            elif isinstance(value, Mapping) and _lookup([*path, "?"]) is not None:
                walk(value, path)  # a section, not a dict setting

    walk(toml, [])
    return problems


def _read_from(config: Path) -> type[Settings]:
    class FileSettings(Settings):
        config_file: ClassVar[Path | None] = config

    return FileSettings


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, the config file, the environment, then explicit overrides.

    ``overrides`` are nested dicts (``jury={"policy": "majority"}``) merged over what the
    file and environment say, so a CLI flag changes one field without resetting its section.
    """
    cls = Settings
    if config is not None:
        if not config.is_file():
            raise FileNotFoundError(f"config file {config} does not exist")
        cls = _read_from(config.resolve())
    base = cls()
    if not overrides:
        return base
    merged = base.model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return cls.model_validate(merged)
