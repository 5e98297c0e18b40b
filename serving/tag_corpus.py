"""Tag a whole corpus with the service's NER: the REST API's exact answers, one JSONL line per
input line, in input order, resumable after any kill.

Three ways to run, the same answers (tests/integration/test_tag_corpus.py holds them equal):

- ``RestWay``: through a running service (``POST /predictions/<model>``, one text a request so
  each line gets its own answer or error): keep-alive sessions, ``concurrency`` requests in
  flight, resends on connection errors, timeouts and 500/502/503/504/507 (a worker that died or
  is restarting), backing off; a service that stays unavailable stops the job, resumable.
- ``InProcessWay``: the handler itself (``ner_handler.KoreanNerHandler``, loaded from a model
  directory or a ``.mar``) answers each chunk as one TorchServe batch of one request a line:
  the same parsing, limits, NER chain and answer code, so an error line has the status and
  message the API gives. The handler's inference sorts a chunk's windows by length into dense
  forward passes (``ner_core.plan_batches``) and answers in request order.
- ``RayWay``: Ray Data ``map_batches`` over the chunks with an actor pool, each actor loading
  the handler once (``RayTagger``), the driver committing every chunk it gets back.

Resumable: the input is cut into chunks of ``chunk_lines`` lines; a chunk's answers are
committed as one shard file in the work dir (``OUTPUT.parts/``), written to a temporary name,
fsynced and renamed, so a shard is either whole or absent. Its name carries the chunk's index,
the SHA-256 of its input bytes (checked when a restart skips it: a changed input stops the job),
its line and error counts. ``manifest.json`` records what decides the answers (model, format,
field, ``--no-result``, chunk size); a restart with other settings is refused. When every chunk is
committed the shards are concatenated into ``OUTPUT.tmp``, renamed onto OUTPUT, and the work dir
removed: a kill at any moment, SIGKILL included, loses at most the chunks in flight, and the
same command started again continues and writes the same bytes as an uninterrupted run.

Memory stays bounded: the input is streamed, at most two chunks are in flight (REST), one
(in-process), or Ray Data's own backpressure (Ray).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import requests
import yaml

from ner_request import describe  # the API's own words for a received JSON value
from serving import paths, tsctl
from serving.predict import RETRY_STATUSES
from serving.retry import retry

logger = logging.getLogger(__name__)

TEXT_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"  # exactly this: TorchServe decodes a body of this type to a JSON value
RESULT_HEADER = "X-NER-Result"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FORMATS = ("text", "jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
GZIP_MAGIC = b"\x1f\x8b"
# 503 / 502 / 504 and connection errors that outlast the resends mean the service is not there:
# the job stops (resumable). 500 / 507 that outlast them are the API's answer for that text.
UNAVAILABLE = {502, 503, 504}


class JobError(RuntimeError):
    """The job cannot go on (input changed, another command's work dir, service unavailable); the
    message says why and what to do. Committed work stays for the next start."""


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobSpec:
    """One tagging job (the CLI's flags, one field each; see scripts/tag_corpus.py)."""

    input: str  # a path, or "-" for stdin
    output: Path
    url: str | None = None  # through a running service
    model: str | None = None
    key: str | None = None
    key_file: Path | None = None
    model_dir: Path | None = None  # in-process (or Ray): a packaged model directory ...
    archive: Path | None = None  # ... or a .mar
    model_config: Path | None = None  # the handler settings for --model-dir (default: the shipped config)
    ray: str | None = None  # "local" or a Ray address
    actors: int | None = None  # Ray actors (default: the cluster's CPUs / threads)
    ray_cpus: int | None = None  # CPUs of a local Ray (default: all)
    format: str = "auto"  # text, jsonl, or auto (jsonl for .jsonl/.ndjson[.gz] or when --field is given)
    field: str | None = None  # the JSONL field holding the text (default "text")
    result: bool = True  # False: no per-token rows (X-NER-Result: false)
    chunk_lines: int = 1000
    concurrency: int = 8
    timeout: float = 60.0
    retries: int = 8
    threads: int | None = None  # intra-op threads (default: the model config's torch_threads)
    work_dir: Path | None = None  # default: OUTPUT.parts beside OUTPUT
    force: bool = False  # overwrite an OUTPUT that no work dir of this job owns
    progress_every: float = 30.0  # seconds between plain progress lines (not on a TTY)


@dataclass
class Summary:
    output: str
    way: str
    texts: int  # lines in the output
    errors: int  # of them, error lines
    resumed: int  # lines that earlier runs had committed
    tagged: int  # lines tagged by this run
    seconds: float  # this run, start to end
    tagging_seconds: float  # this run, from the first chunk sent to the last committed
    texts_per_s: float  # tagged / tagging_seconds
    resent: int = 0  # requests sent again (REST)
    warm_texts_per_s: float = 0.0  # texts/s after the first committed chunk (Ray: once actors hold the model)
    errors_by_status: dict[str, int] = field(default_factory=dict)  # this run's error lines

    def line(self) -> str:
        resumed = f" ({self.resumed} committed before)" if self.resumed else ""
        return (
            f"tag_corpus: {self.texts} texts{resumed}, {self.errors} errors, {self.seconds:.1f} s, "
            f"{self.texts_per_s:.1f} texts/s -> {self.output}"
        )


def input_format(spec: JobSpec) -> str:
    if spec.format != "auto":
        return spec.format
    name = spec.input.lower().removesuffix(".gz")
    return "jsonl" if spec.field is not None or name.endswith(JSONL_SUFFIXES) else "text"


def run(spec: JobSpec, err: IO[str] | None = None) -> Summary:
    """Tag ``spec.input`` into ``spec.output``, continuing whatever an earlier run of the same
    command committed. Raises JobError (the work so far stays) or ValueError (bad arguments)."""
    err = err or sys.stderr
    started = time.perf_counter()
    fmt = input_format(spec)
    if spec.chunk_lines < 1 or spec.concurrency < 1:
        raise ValueError("--chunk-lines and --concurrency must be at least 1")
    work_dir = spec.work_dir or spec.output.with_name(spec.output.name + ".parts")
    with job_lock(work_dir):
        return _run(spec, fmt, work_dir, err, started)


@contextlib.contextmanager
def job_lock(work_dir: Path) -> Iterator[None]:
    """One run per work dir at a time: an exclusive lock on ``<work dir>.lock`` beside it, which
    the kernel releases however the holder ends (SIGKILL included)."""
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    path = work_dir.with_name(work_dir.name + ".lock")
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise JobError(
                f"another run of this job (pid {lock.read().strip() or '?'}) holds {path}; "
                "let it finish, or stop it first"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            if not work_dir.exists():  # finished: nothing left to guard
                path.unlink(missing_ok=True)


def _run(spec: JobSpec, fmt: str, work_dir: Path, err: IO[str], started: float) -> Summary:
    way = make_way(spec, fmt)
    params = {
        "model": way.identity,
        "format": fmt,
        "field": (spec.field or "text") if fmt == "jsonl" else None,
        "result": spec.result,
        "chunk_lines": spec.chunk_lines,
    }
    store = Store.open(spec.output, work_dir, params, spec.force)
    done = store.committed()
    if store.complete:
        store.remove()
        texts = sum(c.lines for c in done.values())
        errors = sum(c.errors for c in done.values())
        return Summary(str(spec.output), way.name, texts, errors, texts, 0, time.perf_counter() - started, 0.0, 0.0)
    total = count_lines(spec.input)
    progress = Progress(
        total,
        stream=err,
        every=spec.progress_every,
        initial=sum(c.lines for c in done.values()),
        initial_errors=sum(c.errors for c in done.values()),
    )
    counts = Counts()

    def commit(chunk: ChunkInfo, data: bytes, errors: int, statuses: dict[str, int]) -> None:
        store.commit(chunk, data, errors)
        if counts.first_commit is None:
            counts.first_commit, counts.first_lines = time.perf_counter(), chunk.lines
        counts.add(chunk.lines, errors, statuses)
        progress.update(chunk.lines, errors)

    try:
        with open_input(spec.input) as stream:
            spool = store.spool() if way.needs_file and not is_plain_file(spec.input) else None
            reader = read_chunks(stream, spec.chunk_lines, tee=spool)
            pending = skip_committed(reader, done, counts, work_dir)
            way.prepare()
            tag_started = time.perf_counter()
            way.run(pending, commit, source=spool.name if spool else spec.input)
            if spool:
                spool.close()
            chunks = counts.chunks_seen
        if any(index >= chunks for index in done):
            raise JobError(
                f"{work_dir} holds chunks past the input's end ({chunks} chunks): the input changed "
                f"since this job started; remove {work_dir} to start over"
            )
        tag_ended = time.perf_counter()
        tagging = tag_ended - tag_started
        store.assemble(chunks)
        store.remove()
    finally:
        progress.close()
    warm = tag_ended - counts.first_commit if counts.first_commit is not None else 0.0
    return Summary(
        str(spec.output),
        way.name,
        counts.lines + counts.resumed,
        counts.errors + counts.resumed_errors,
        counts.resumed,
        counts.lines,
        round(time.perf_counter() - started, 2),
        round(tagging, 2),
        round(counts.lines / tagging, 2) if tagging > 0 else 0.0,
        way.resent,
        round((counts.lines - counts.first_lines) / warm, 2) if warm > 0 else 0.0,
        dict(sorted(counts.statuses.items())),
    )


@dataclass
class Counts:
    lines: int = 0
    errors: int = 0
    resumed: int = 0
    resumed_errors: int = 0
    chunks_seen: int = 0
    first_commit: float | None = None  # perf_counter() of this run's first committed chunk
    first_lines: int = 0  # its lines
    statuses: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, lines: int, errors: int, statuses: dict[str, int]) -> None:
        with self.lock:
            self.lines += lines
            self.errors += errors
            for status, n in statuses.items():
                self.statuses[status] = self.statuses.get(status, 0) + n


# --------------------------------------------------------------------------- input


def is_plain_file(path: str) -> bool:
    """A regular file that is not gzip: readable again by byte range (what Ray's actors do)."""
    if path == "-" or not Path(path).is_file():
        return False
    with open(path, "rb") as f:
        return f.read(2) != GZIP_MAGIC


def open_input(path: str) -> IO[bytes]:
    """The input's bytes, gzip decompressed as they are read (told by its first two bytes, so
    stdin works too)."""
    raw: Any
    if path == "-":
        raw = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115  (closed by the caller's with, or the gzip wrapper)
        except OSError as error:
            raise JobError(f"cannot read {path}: {error.strerror}") from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


def count_lines(path: str) -> int | None:
    """Lines of a file (for the ETA), as ``lines_of`` counts them; None for stdin."""
    if path == "-":
        return None
    count, last = 0, b"\n"
    with open_input(path) as stream:
        while block := stream.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def lines_of(data: bytes, first: bool = False) -> list[bytes]:
    """The lines of a chunk's bytes: each without its ``\\n`` or ``\\r\\n``; a last line
    without a newline counts, a newline at the end adds no empty line. ``first``: the input's
    first chunk, whose UTF-8 byte order mark is not part of the text."""
    if first and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


@dataclass(frozen=True)
class ChunkInfo:
    """A chunk of the input: ``lines`` lines from line ``first_line`` (1-based), bytes
    [start, end) of the (decompressed) input, their SHA-256 (16 hex digits)."""

    index: int
    first_line: int
    lines: int
    start: int
    end: int
    digest: str


@dataclass(frozen=True)
class Chunk:
    info: ChunkInfo
    lines: list[bytes]


def read_chunks(stream: IO[bytes], size: int, tee: IO[bytes] | None = None) -> Iterator[Chunk]:
    """The input in chunks of ``size`` lines, streamed; ``tee`` gets a copy of every byte."""
    index, first_line, position = 0, 1, 0
    raws: list[bytes] = []
    for raw in stream:
        raws.append(raw)
        if len(raws) == size:
            yield _chunk(index, first_line, position, raws, tee)
            index, first_line, position = index + 1, first_line + size, position + sum(map(len, raws))
            raws = []
    if raws:
        yield _chunk(index, first_line, position, raws, tee)


def _chunk(index: int, first_line: int, position: int, raws: list[bytes], tee: IO[bytes] | None) -> Chunk:
    data = b"".join(raws)
    if tee is not None:
        tee.write(data)
        tee.flush()
    lines = lines_of(data, first=index == 0)
    digest = hashlib.sha256(data).hexdigest()[:16]
    info = ChunkInfo(index, first_line, len(lines), position, position + len(data), digest)
    return Chunk(info, lines)


def skip_committed(
    chunks: Iterable[Chunk], done: dict[int, CommittedChunk], counts: Counts, work_dir: Path
) -> Iterator[Chunk]:
    """The chunks still to tag; a committed one is checked against the input (its digest)."""
    for chunk in chunks:
        counts.chunks_seen += 1
        committed = done.get(chunk.info.index)
        if committed is None:
            yield chunk
            continue
        if committed.digest != chunk.info.digest or committed.lines != chunk.info.lines:
            last = chunk.info.first_line + chunk.info.lines - 1
            raise JobError(
                f"lines {chunk.info.first_line}-{last} of the input differ from the ones this job "
                f"committed: the input changed since it started; remove {work_dir} to start over"
            )
        counts.resumed += committed.lines
        counts.resumed_errors += committed.errors


# --------------------------------------------------------------------------- requests and answers


@dataclass(frozen=True)
class Body:
    """One line as the API is sent it: the request body and its content type."""

    data: bytes
    content_type: str


def refusal(message: str) -> dict[str, Any]:
    """The error line for an input line the job cannot even send (JSONL only)."""
    return {"error": message, "status": 400}


def line_request(line: bytes, fmt: str, field_name: str) -> Body | dict[str, Any]:
    """What is sent for one input line. A text line goes as it is (``text/plain``: the API judges
    it, empty, too long or not UTF-8, with its own message); a JSONL line's field as a JSON string
    (escaped: a lone surrogate reaches the API, which refuses it)."""
    if fmt == "text":
        return Body(line, TEXT_TYPE)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return refusal(f"line is not valid UTF-8: byte 0x{line[error.start]:02x} at position {error.start}")
    try:
        record = json.loads(text)
    except RecursionError:
        return refusal("line is JSON nested too deeply")
    except ValueError as error:
        where = f"{error.msg} at position {error.pos}" if isinstance(error, json.JSONDecodeError) else str(error)
        return refusal(f"line is not valid JSON: {where}")
    if not isinstance(record, dict):
        return refusal(f'line must be a JSON object with the field "{field_name}", received {describe(record)}')
    if field_name not in record:
        return refusal(f'line has no field "{field_name}"')
    value = record[field_name]
    if not isinstance(value, str):
        return refusal(f'field "{field_name}" must be a string, received {describe(value)}')
    return Body(json.dumps(value).encode("ascii"), JSON_TYPE)


def answer_of(status: int, body: bytes) -> dict[str, Any]:
    """The answer an output line carries for one API answer: its JSON object; an error keeps the
    API's body (``error``, ``status``, ...), one without a JSON body gets ``error`` and ``status``."""
    try:
        value = json.loads(body) if body else None
    except ValueError:
        value = None
    if status == 200 and isinstance(value, dict):
        return value
    if isinstance(value, dict) and "error" in value:
        return value if "status" in value else {**value, "status": status}
    if isinstance(value, dict) and "message" in value:  # TorchServe's own errors: code, type, message
        return {"error": str(value["message"]), "status": status}
    text = body.decode("utf-8", "replace").strip()
    if not text and status == 413:
        text = "the text is larger than the service's max_request_size"
    return {"error": text or f"HTTP {status} with an empty body", "status": status}


def shard_bytes(first_line: int, answers: Sequence[dict[str, Any]]) -> tuple[bytes, int, dict[str, int]]:
    """The output lines of a chunk, its error count and the errors by status."""
    statuses: dict[str, int] = {}
    out = []
    for n, answer in enumerate(answers, start=first_line):
        if "error" in answer:
            statuses[str(answer.get("status"))] = statuses.get(str(answer.get("status")), 0) + 1
        out.append(json.dumps({"line": n, **answer}, ensure_ascii=False))
    data = ("\n".join(out) + "\n").encode("utf-8") if out else b""
    return data, sum(statuses.values()), statuses


# --------------------------------------------------------------------------- the handler in-process


def ts_decoded(data: bytes, content_type: str) -> Any:
    """A body as TorchServe's worker hands it to the handler (ts/protocol/otf_message_handler.py):
    application/json decoded to a JSON value, text/* to str, each left as bytes when that fails."""
    if content_type == "application/json":
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            return data
    if content_type.startswith("text"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    return data


class _NoMetrics:
    """The handler's metrics sink in a batch job: nothing is reported."""

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        return None

    add_time = add_metric


class HandlerAnswerer:
    """The service's handler, loaded once in this process: ``answer(requests)`` gives each
    request's answer as the REST API would (its JSON, or its error with status and message).

    This class is the one place the job calls the handler's code: one TorchServe batch
    (``KoreanNerHandler.handle``) per call, one request a text."""

    def __init__(
        self, model_dir: Path, handler_settings: dict[str, Any], model_name: str = "kor_ner", model_version: str = "1.0"
    ) -> None:
        import torch

        from ner_handler import KoreanNerHandler

        self.model_dir, self.model_name, self.model_version = Path(model_dir), model_name, model_version
        self.gpu = 0 if torch.cuda.is_available() else None
        self.handler = KoreanNerHandler()
        self.handler.initialize(self._context({"handler": dict(handler_settings)}))

    def _context(self, model_yaml_config: dict[str, Any] | None = None) -> Any:
        from ts.context import Context

        return Context(
            self.model_name,
            str(self.model_dir),
            {"model": {"modelVersion": self.model_version}},
            1,
            self.gpu,
            "0.12.0",
            metrics=_NoMetrics(),
            model_yaml_config=model_yaml_config or {},
        )

    def answer(
        self, requests_: Sequence[Body | dict[str, Any]], result: bool = True, first_line: int = 1
    ) -> list[dict[str, Any]]:
        from ts.context import RequestProcessor

        bodies = [(i, r) for i, r in enumerate(requests_) if isinstance(r, Body)]
        out: list[dict[str, Any]] = [r if isinstance(r, dict) else {} for r in requests_]
        if not bodies:
            return out
        context = self._context()
        options = {} if result else {RESULT_HEADER: "false"}
        context.request_ids = {j: f"line-{first_line + i}" for j, (i, _) in enumerate(bodies)}
        context.request_processor = [
            RequestProcessor({"body": {"content-type": b.content_type}, "Content-Type": b.content_type, **options})
            for _, b in bodies
        ]
        answers = self.handler.handle([{"body": ts_decoded(b.data, b.content_type)} for _, b in bodies], context)
        for j, ((i, _), body) in enumerate(zip(bodies, answers, strict=True)):
            out[i] = answer_of(context.get_response_status(j)[0], body)
        return out


def extract_archive(archive: Path, into: Path) -> tuple[Path, dict[str, Any], str, str]:
    """A .mar unpacked into ``into``: the model directory, its model config (the archive's own
    YAML, as TorchServe reads it), its model name and version."""
    try:
        with zipfile.ZipFile(archive) as mar:
            mar.extractall(into)
    except (OSError, zipfile.BadZipFile) as error:
        raise JobError(f"cannot unpack {archive}: {error}") from None
    try:
        model = json.loads((into / "MAR-INF" / "MANIFEST.json").read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError) as error:
        raise JobError(f"{archive} has no readable MAR-INF/MANIFEST.json: {error}") from None
    config_file = model.get("configFile")
    config = yaml.safe_load((into / config_file).read_text(encoding="utf-8")) if config_file else {}
    return into, config or {}, str(model.get("modelName", archive.stem)), str(model.get("modelVersion", "1.0"))


# --------------------------------------------------------------------------- the three ways


Commit = Callable[[ChunkInfo, bytes, int, dict[str, int]], None]


class Way(Protocol):
    name: str
    identity: str  # what the manifest records of the model: a resume must name the same
    needs_file: bool  # whether the chunks are read again from a file (Ray's actors)

    @property
    def resent(self) -> int:
        """Requests sent again (REST)."""
        ...

    def prepare(self) -> None:
        """Load what tagging needs (the model in-process), before the clock of texts/s starts."""

    def run(self, chunks: Iterator[Chunk], commit: Commit, source: str) -> None: ...


@dataclass
class LocalModel:
    """The model the in-process and Ray ways load: a directory and the handler settings."""

    model_dir: Path
    settings: dict[str, Any]
    name: str
    version: str
    identity: str


def local_model(spec: JobSpec, work_dir: Path) -> LocalModel:
    if spec.archive is not None:
        into = work_dir.with_name(work_dir.name + ".model")
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        model_dir, config, name, version = extract_archive(spec.archive, into)
        identity = f"archive:{spec.archive.resolve()}"
    else:
        assert spec.model_dir is not None
        if not spec.model_dir.is_dir():
            raise JobError(f"--model-dir {spec.model_dir} is not a directory")
        config_path = spec.model_config or paths.MODEL_CONFIG
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        model_dir, name, version = spec.model_dir, spec.model_dir.name, "1.0"
        identity = f"dir:{spec.model_dir.resolve()}"
    settings = dict(config.get("handler") or {})
    if spec.threads is not None:
        settings["torch_threads"] = spec.threads
    return LocalModel(model_dir, settings, name, version, identity)


def make_way(spec: JobSpec, fmt: str) -> Way:
    chosen = [spec.url is not None, spec.model_dir is not None, spec.archive is not None]
    if sum(chosen) != 1:
        raise ValueError("give exactly one of --url (with --model), --model-dir or --archive")
    field_name = spec.field or "text"
    if spec.url is not None:
        if spec.ray is not None:
            raise ValueError("--ray runs the model in Ray's actors: give --model-dir or --archive, not --url")
        if not spec.model:
            raise ValueError("--url needs --model NAME")
        client = RestClient(spec.url, spec.model, read_key(spec.key, spec.key_file), spec.timeout, spec.retries)
        return RestWay(client, fmt, field_name, spec.result, spec.concurrency)
    work_dir = spec.work_dir or spec.output.with_name(spec.output.name + ".parts")
    model = local_model(spec, work_dir)
    if spec.ray is not None:
        return RayWay(spec.ray, model, fmt, field_name, spec.result, spec.actors, spec.ray_cpus)
    return InProcessWay(model, fmt, field_name, spec.result)


class InProcessWay:
    name = "in-process"
    needs_file = False
    resent = 0

    def __init__(self, model: LocalModel, fmt: str, field_name: str, result: bool) -> None:
        self.model, self.fmt, self.field, self.result = model, fmt, field_name, result
        self.identity = model.identity
        self.answerer: HandlerAnswerer | None = None

    def prepare(self) -> None:
        self.answerer = HandlerAnswerer(self.model.model_dir, self.model.settings, self.model.name, self.model.version)

    def run(self, chunks: Iterator[Chunk], commit: Commit, source: str) -> None:
        for chunk in chunks:
            assert self.answerer is not None, "prepare() loads the model"
            requests_ = [line_request(line, self.fmt, self.field) for line in chunk.lines]
            answers = self.answerer.answer(requests_, self.result, chunk.info.first_line)
            commit(chunk.info, *shard_bytes(chunk.info.first_line, answers))


# --------------------------------------------------------------------------- REST


def read_key(key: str | None, key_file: Path | None) -> str | None:
    """The inference key: given, or from a file holding it (or TorchServe's key_file.json)."""
    if key is not None or key_file is None:
        return key
    try:
        text = key_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise JobError(f"cannot read --key-file {key_file}: {error.strerror}") from None
    if text.startswith("{"):
        try:
            return str(json.loads(text)["inference"]["key"])
        except (ValueError, KeyError, TypeError):
            raise JobError(f"--key-file {key_file} is JSON but not TorchServe's key_file.json") from None
    return text


def resend_reason(resp: requests.Response) -> str | None:
    """Why a response is worth sending again, or None: TorchServe's unavailable or "Worker died."
    answers are; the handler's own 500 for a text (its JSON has ``status``) is that text's answer."""
    if resp.status_code not in RETRY_STATUSES:
        return None
    if resp.status_code == 500:
        try:
            if isinstance(body := resp.json(), dict) and body.get("status") == 500:
                return None
        except ValueError:
            pass
    return f"HTTP {resp.status_code}"


class RestClient:
    """POSTs one body to ``URL/predictions/MODEL`` on a keep-alive session of its thread, with a
    read timeout and resends; the answer as an output line carries it."""

    def __init__(
        self, url: str, model: str, key: str | None, timeout: float, retries: int, backoff: float = 0.5
    ) -> None:
        self.endpoint = url.rstrip("/") + tsctl.predictions_path(model)
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.local = threading.local()
        self.sessions: list[requests.Session] = []
        self.lock = threading.Lock()
        self.resent = 0
        self.stop = threading.Event()  # set when the job stops: requests still resending give up

    def session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            with self.lock:
                self.sessions.append(session)
        return session

    def close(self) -> None:
        with self.lock:
            for session in self.sessions:
                session.close()

    def _resent(self, reason: str, attempt: int) -> None:
        if self.stop.is_set():
            raise JobError("stopped")
        with self.lock:
            self.resent += 1
        logger.info("resending after %s (attempt %d)", reason, attempt)

    def answer(self, body: Body, result: bool = True) -> dict[str, Any]:
        headers = {**self.auth, "Content-Type": body.content_type, **({} if result else {RESULT_HEADER: "false"})}

        def post() -> requests.Response:
            return self.session().post(self.endpoint, data=body.data, headers=headers, timeout=(10, self.timeout))

        try:
            resp = retry(
                post,
                self.retries + 1,
                retry_if=resend_reason,
                errors=(requests.ConnectionError, requests.Timeout),
                backoff=self.backoff,
                on_retry=self._resent,
            )
        except requests.RequestException as error:
            raise JobError(
                f"{self.endpoint}: {type(error).__name__} after {self.retries} resends; "
                "start the same command again to continue"
            ) from None
        if resp.status_code in UNAVAILABLE:
            raise JobError(
                f"{self.endpoint}: HTTP {resp.status_code} after {self.retries} resends (the service is "
                "unavailable); start the same command again to continue"
            )
        if resp.status_code in (401, 403) or (resp.status_code == 400 and b"InvalidKeyException" in resp.content):
            raise JobError(
                f"{self.endpoint}: the service refused the inference key (HTTP {resp.status_code}): "
                "pass it with --key or --key-file"
            )
        if resp.status_code == 404:
            raise JobError(f"{self.endpoint}: HTTP 404: {resp.text.strip()[:300]}")
        return answer_of(resp.status_code, resp.content)


class RestWay:
    name = "rest"
    needs_file = False
    window = 2  # chunks in flight: the next chunk's requests keep every connection busy

    def __init__(self, client: RestClient, fmt: str, field_name: str, result: bool, concurrency: int) -> None:
        self.client, self.fmt, self.field, self.result, self.concurrency = client, fmt, field_name, result, concurrency
        self.identity = f"url:{client.endpoint}"

    @property
    def resent(self) -> int:
        return self.client.resent

    def prepare(self) -> None:
        return None

    def run(self, chunks: Iterator[Chunk], commit: Commit, source: str) -> None:
        inflight: deque[tuple[Chunk, list[Future[dict[str, Any]] | dict[str, Any]]]] = deque()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tag-corpus")
        try:
            for chunk in chunks:
                requests_ = [line_request(line, self.fmt, self.field) for line in chunk.lines]
                inflight.append(
                    (
                        chunk,
                        [
                            pool.submit(self.client.answer, r, self.result) if isinstance(r, Body) else r
                            for r in requests_
                        ],
                    )
                )
                while len(inflight) >= self.window:
                    self._finish(*inflight.popleft(), commit)
            while inflight:
                self._finish(*inflight.popleft(), commit)
        finally:
            self.client.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.client.close()

    @staticmethod
    def _finish(chunk: Chunk, pending: list[Future[dict[str, Any]] | dict[str, Any]], commit: Commit) -> None:
        answers = [p.result() if isinstance(p, Future) else p for p in pending]
        commit(chunk.info, *shard_bytes(chunk.info.first_line, answers))


# --------------------------------------------------------------------------- Ray


class RayTagger:
    """A Ray Data actor: loads the handler once, then answers whole chunks, each read from its
    byte range of the input (or the work dir's spool of it)."""

    def __init__(self, model: dict[str, Any], fmt: str, field_name: str, result: bool) -> None:
        logging.getLogger("ts").setLevel(logging.ERROR)  # TorchServe's import notes, once per actor
        self.answerer = HandlerAnswerer(Path(model["model_dir"]), model["settings"], model["name"], model["version"])
        self.fmt, self.field, self.result = fmt, field_name, result

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        out: dict[str, list[Any]] = {"index": [], "data": [], "errors": [], "statuses": []}
        for i in range(len(batch["index"])):
            with open(str(batch["source"][i]), "rb") as f:
                f.seek(int(batch["start"][i]))
                data = f.read(int(batch["end"][i]) - int(batch["start"][i]))
            first_line = int(batch["first_line"][i])
            lines = lines_of(data, first=int(batch["index"][i]) == 0)
            answers = self.answerer.answer(
                [line_request(line, self.fmt, self.field) for line in lines], self.result, first_line
            )
            shard, errors, statuses = shard_bytes(first_line, answers)
            out["index"].append(int(batch["index"][i]))
            out["data"].append(shard)
            out["errors"].append(errors)
            out["statuses"].append(json.dumps(statuses))
        return {
            key: np.array(values, dtype=object if key in ("data", "statuses") else np.int64)
            for key, values in out.items()
        }


class RayWay:
    name = "ray"
    needs_file = True
    resent = 0

    def __init__(
        self,
        address: str,
        model: LocalModel,
        fmt: str,
        field_name: str,
        result: bool,
        actors: int | None,
        cpus: int | None,
    ) -> None:
        self.address, self.model, self.fmt, self.field, self.result = address, model, fmt, field_name, result
        self.actors, self.cpus = actors, cpus
        self.identity = model.identity
        self.threads = int(model.settings.get("torch_threads", 1) or 1)

    def prepare(self) -> None:
        return None  # Ray's actors load the model: their start is part of the run

    def run(self, chunks: Iterator[Chunk], commit: Commit, source: str) -> None:
        infos = {chunk.info.index: chunk.info for chunk in chunks}  # the lines are read again by the actors
        if not infos:
            return
        import ray

        local = self.address == "local"
        ray.init(
            address=None if local else self.address,
            num_cpus=self.cpus if local else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=True,
            ignore_reinit_error=True,
        )
        try:
            logging.getLogger("ray.data").setLevel(logging.ERROR)  # the job's own progress says it
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.print_on_execution_start = False
            cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
            actors = self.actors or max(1, cluster_cpus // self.threads)
            items = [{**asdict(info), "source": str(Path(source).resolve())} for info in infos.values()]
            model = {
                "model_dir": str(Path(self.model.model_dir).resolve()),
                "settings": self.model.settings,
                "name": self.model.name,
                "version": self.model.version,
            }
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                RayTagger,
                fn_constructor_kwargs={
                    "model": model,
                    "fmt": self.fmt,
                    "field_name": self.field,
                    "result": self.result,
                },
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=min(self.threads, cluster_cpus),
            )
            for row in dataset.iter_rows():
                commit(infos[int(row["index"])], bytes(row["data"]), int(row["errors"]), json.loads(row["statuses"]))
        except (JobError, KeyboardInterrupt):
            raise
        except Exception as error:  # Ray wraps an actor's failure in its own types
            first = (str(error).strip().splitlines() or [""])[0]
            raise JobError(f"Ray: {type(error).__name__}: {first}") from error
        finally:
            ray.shutdown()


# --------------------------------------------------------------------------- the work dir


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def shard_name(info: ChunkInfo, errors: int) -> str:
    return f"{info.index:09d}.{info.digest}.{info.first_line}.{info.lines}.{errors}.jsonl"


def parse_shard_name(name: str) -> tuple[ChunkInfo, int] | None:
    parts = name.split(".")
    if len(parts) != 6 or parts[-1] != "jsonl" or not all(p.isdigit() for p in (parts[0], *parts[2:5])):
        return None
    index, digest, first, lines, errors = int(parts[0]), parts[1], int(parts[2]), int(parts[3]), int(parts[4])
    return ChunkInfo(index, first, lines, 0, 0, digest), errors


@dataclass
class CommittedChunk:
    digest: str
    lines: int
    errors: int
    path: Path


class Store:
    """The work dir: the manifest and one shard per committed chunk. It exists only whole: it
    is made under a temporary name with its manifest, then renamed into place, and removed by
    renaming it away first."""

    def __init__(self, output: Path, work_dir: Path, manifest: dict[str, Any]) -> None:
        self.output, self.work_dir, self.manifest = output, work_dir, manifest

    @classmethod
    def open(cls, output: Path, work_dir: Path, params: dict[str, Any], force: bool) -> Store:
        for stale in work_dir.parent.glob(f"{work_dir.name}.*-[0-9]*"):  # a kill's leftovers (made or removed)
            shutil.rmtree(stale, ignore_errors=True)
        manifest_path = work_dir / MANIFEST
        if work_dir.is_dir():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise JobError(f"{work_dir} is not this job's work dir ({error}); remove it to start over") from None
            differ = sorted(
                k for k in {*params, *manifest.get("params", {})} if params.get(k) != manifest.get("params", {}).get(k)
            )
            if differ:
                was = {k: manifest.get("params", {}).get(k) for k in differ}
                now = {k: params.get(k) for k in differ}
                raise JobError(
                    f"{work_dir} holds a job started with other settings ({was}, now {now}): start it "
                    f"with those, or remove {work_dir} to start over"
                )
            for part in work_dir.glob(".*.part"):
                part.unlink(missing_ok=True)
            return cls(output, work_dir, manifest)
        if output.exists() and not force:
            raise JobError(
                f"{output} exists and no work dir of a job writing it ({work_dir}) does: pass --force to overwrite it"
            )
        work_dir.parent.mkdir(parents=True, exist_ok=True)
        manifest = {"version": MANIFEST_VERSION, "output": str(output), "params": params, "complete": False}
        making = work_dir.with_name(f"{work_dir.name}.new-{os.getpid()}")
        making.mkdir()
        _write_atomic(making / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
        os.rename(making, work_dir)
        _fsync_dir(work_dir.parent)
        return cls(output, work_dir, manifest)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def committed(self) -> dict[int, CommittedChunk]:
        """index -> the committed chunk, read from the shards' names."""
        out: dict[int, CommittedChunk] = {}
        for path in self.work_dir.iterdir():
            parsed = parse_shard_name(path.name)
            if parsed is not None:
                info, errors = parsed
                out[info.index] = CommittedChunk(info.digest, info.lines, errors, path)
        return out

    def spool(self) -> IO[bytes]:
        """A copy of the input as it is read (stdin, gzip), for the Ray actors to read by range."""
        return open(self.work_dir / "input.spool", "wb")

    def commit(self, info: ChunkInfo, data: bytes, errors: int) -> None:
        _write_atomic(self.work_dir / shard_name(info, errors), data)

    def assemble(self, chunks: int) -> None:
        """OUTPUT from every shard in order, through a temporary file renamed into place."""
        shards = self.committed()
        missing = [i for i in range(chunks) if i not in shards]
        if missing:
            raise JobError(f"chunks {missing[:5]} were never committed")
        tmp = self.output.with_name(self.output.name + ".tmp")
        with open(tmp, "wb") as out:
            for index in range(chunks):
                with open(shards[index].path, "rb") as shard:
                    shutil.copyfileobj(shard, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.output)
        _fsync_dir(self.output.parent)
        self.manifest["complete"] = True
        _write_atomic(self.work_dir / MANIFEST, json.dumps(self.manifest, indent=2).encode("utf-8"))

    def remove(self) -> None:
        gone = self.work_dir.with_name(f"{self.work_dir.name}.old-{os.getpid()}")
        os.rename(self.work_dir, gone)
        shutil.rmtree(gone, ignore_errors=True)
        shutil.rmtree(self.work_dir.with_name(self.work_dir.name + ".model"), ignore_errors=True)


# --------------------------------------------------------------------------- progress


class Progress:
    """A tqdm bar (texts/s, errors, ETA) on a terminal; elsewhere a plain line every ``every``
    seconds."""

    def __init__(
        self,
        total: int | None,
        stream: IO[str],
        every: float = 30.0,
        tty: bool | None = None,
        initial: int = 0,
        initial_errors: int = 0,
    ) -> None:
        """``initial``: texts (``initial_errors`` errors) an earlier run committed: counted, not in the rate."""
        self.total, self.stream, self.every = total, stream, every
        self.tty = stream.isatty() if tty is None else tty
        self.done, self.errors, self.skipped = 0, initial_errors, initial
        self.started = time.perf_counter()
        self.last = self.started
        self.bar: Any = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="text", file=stream, dynamic_ncols=True, smoothing=0.1)
            self.bar.set_postfix(errors=self.errors)

    def update(self, lines: int, errors: int) -> None:
        self.done += lines
        self.errors += errors
        if self.bar is not None:
            self.bar.set_postfix(errors=self.errors, refresh=False)
            self.bar.update(lines)
            return
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(self.status(now) + "\n")
            self.stream.flush()

    def status(self, now: float) -> str:
        rate = self.done / (now - self.started) if now > self.started else 0.0
        seen = self.done + self.skipped
        of = f" of {self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime((self.total - seen) / rate))}"
        return f"tag_corpus: {seen}{of} texts, {rate:.1f} texts/s, {self.errors} errors{eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
