"""The corpus job without a server: reading lines, what each line sends, the work dir, the
handler in-process on a tiny random BERT. Kill-and-resume and the Ray way, which start the
command several times: tests/integration/test_tag_corpus_resume.py."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from serving import corpus, paths, tag_corpus
from serving.tag_corpus import Body, JobError, JobSpec

SCRIPT = paths.ROOT / "scripts" / "tag_corpus.py"
BAD_LINES = [b"", b"   ", "가".encode() * 2001, b"\xff\xfe not UTF-8", b"." * 1999]


def corpus_bytes(n: int) -> bytes:
    """``n`` lines: the sample sentences over and over, the refused kinds of line among them."""
    good = [s.encode() for s in corpus.SAMPLE_SENTENCES]
    lines = [BAD_LINES[i // 37 % len(BAD_LINES)] if i % 37 == 5 else good[i % len(good)] for i in range(n)]
    return b"\n".join(lines) + b"\n"


def spec(tmp_path: Path, model_dir: Path, source: str, **kw) -> JobSpec:
    return JobSpec(input=source, output=kw.pop("output", tmp_path / "out.jsonl"), model_dir=model_dir, **kw)


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- lines and requests


def test_lines_keep_every_line_and_drop_only_terminators_and_the_bom():
    assert tag_corpus.lines_of(b"\xef\xbb\xbfa\r\n\nb\n  \nc", first=True) == [b"a", b"", b"b", b"  ", b"c"]
    assert tag_corpus.lines_of(b"\xef\xbb\xbfa\n") == [b"\xef\xbb\xbfa"]  # a BOM only opens the input
    assert tag_corpus.lines_of(b"\n") == [b""]
    assert tag_corpus.lines_of(b"") == []


def test_chunks_cover_the_input_with_digests_of_their_bytes():
    data = b"a\nbb\n\nccc"
    chunks = list(tag_corpus.read_chunks(io.BytesIO(data), 2))
    assert [(c.info.index, c.info.first_line, c.info.lines, c.info.start, c.info.end) for c in chunks] == [
        (0, 1, 2, 0, 5),
        (1, 3, 2, 5, 9),
    ]
    assert [c.lines for c in chunks] == [[b"a", b"bb"], [b"", b"ccc"]]
    assert chunks[0].info.digest != next(tag_corpus.read_chunks(io.BytesIO(b"a\nbc\n"), 2)).info.digest


@pytest.mark.parametrize(
    "line, message",
    [
        (b"\xc3(", "line is not valid UTF-8: byte 0xc3 at position 0"),
        (b'{"text": ', "line is not valid JSON: Expecting value at position 9"),
        (b"", "line is not valid JSON: Expecting value at position 0"),
        (b'["a"]', 'line must be a JSON object with the field "text", received a JSON list of 1 items'),
        (b'{"body": "a"}', 'line has no field "text"'),
        (b'{"text": 3}', 'field "text" must be a string, received a JSON number'),
    ],
)
def test_a_jsonl_line_that_cannot_be_sent_gets_its_own_error_line(line, message):
    assert tag_corpus.line_request(line, "jsonl", "text") == {"error": message, "status": 400}


def test_a_jsonl_text_goes_as_a_json_string_and_a_text_line_as_it_is():
    assert tag_corpus.line_request('{"text": "서울\\ud800"}'.encode(), "jsonl", "text") == Body(
        b'"\\uc11c\\uc6b8\\ud800"', "application/json"
    )
    assert tag_corpus.line_request(b"\xff", "text", "text") == Body(b"\xff", "text/plain; charset=utf-8")


def test_errors_without_the_handlers_json_still_say_status_and_why():
    assert tag_corpus.answer_of(503, b'{"code": 503, "type": "ServiceUnavailableException", "message": "busy"}') == {
        "error": "busy",
        "status": 503,
    }
    assert tag_corpus.answer_of(413, b"") == {
        "error": "the text is larger than the service's max_request_size",
        "status": 413,
    }


# --------------------------------------------------------------------------- in-process


def test_in_process_answers_every_line_in_order_with_the_apis_errors(tmp_path, tiny_model_dir):
    source = tmp_path / "in.txt"
    source.write_bytes(corpus_bytes(90))
    summary = tag_corpus.run(spec(tmp_path, tiny_model_dir, str(source), chunk_lines=16), err=io.StringIO())
    out = read_output(tmp_path / "out.jsonl")
    assert [o["line"] for o in out] == list(range(1, 91))
    texts = tag_corpus.lines_of(source.read_bytes())
    assert all(o["sentence"] == texts[o["line"] - 1].decode() for o in out if "error" not in o)
    errors = {o["line"]: (o["status"], o["error"]) for o in out if "error" in o}
    assert errors == {
        6: (400, "text is empty or blank (0 characters)"),
        43: (400, "text is empty or blank (3 characters)"),
        80: (400, "text has 2001 characters; the limit is 2000"),
    }
    assert (summary.texts, summary.errors, summary.tagged, summary.errors_by_status) == (90, 3, 90, {"400": 3})
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_gzip_stdin_and_jsonl_give_the_same_answers(tmp_path, tiny_model_dir):
    data = corpus_bytes(40)
    plain = tmp_path / "in.txt"
    plain.write_bytes(data)
    tag_corpus.run(spec(tmp_path, tiny_model_dir, str(plain), chunk_lines=7), err=io.StringIO())
    expected = (tmp_path / "out.jsonl").read_bytes()
    packed = tmp_path / "in.txt.gz"
    packed.write_bytes(gzip.compress(data))
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "-",
            str(tmp_path / "stdin.jsonl"),
            "--model-dir",
            str(tiny_model_dir),
            "--chunk-lines",
            "7",
        ],
        input=packed.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "stdin.jsonl").read_bytes() == expected
    records = tmp_path / "in.jsonl"
    lines = tag_corpus.lines_of(data)
    records.write_text(
        "".join(
            json.dumps({"id": i, "body": line.decode()}, ensure_ascii=False) + "\n"
            for i, line in enumerate(lines)
            if b"\xff" not in line
        ),
        encoding="utf-8",
    )
    tag_corpus.run(
        spec(tmp_path, tiny_model_dir, str(records), field="body", output=tmp_path / "j.jsonl"), err=io.StringIO()
    )
    by_text = list(read_output(tmp_path / "j.jsonl"))
    kept = [o for o, line in zip(read_output(tmp_path / "out.jsonl"), lines, strict=True) if b"\xff" not in line]
    assert [{**o, "line": 0} for o in by_text] == [{**o, "line": 0} for o in kept]


def test_no_result_leaves_out_the_token_rows(tmp_path, tiny_model_dir):
    source = tmp_path / "in.txt"
    source.write_bytes(corpus_bytes(8))
    tag_corpus.run(spec(tmp_path, tiny_model_dir, str(source)), err=io.StringIO())
    tag_corpus.run(
        spec(tmp_path, tiny_model_dir, str(source), result=False, output=tmp_path / "short.jsonl"), err=io.StringIO()
    )
    full, short = read_output(tmp_path / "out.jsonl"), read_output(tmp_path / "short.jsonl")
    assert all("result" in o for o in full if "error" not in o) and not any("result" in o for o in short)
    assert [{k: v for k, v in o.items() if k != "result"} for o in full] == short


# --------------------------------------------------------------------------- the work dir


def test_a_restart_with_other_settings_or_a_changed_input_is_refused(tmp_path, tiny_model_dir):
    source = tmp_path / "in.txt"
    source.write_bytes(corpus_bytes(30))
    job = spec(tmp_path, tiny_model_dir, str(source), chunk_lines=10)
    work = tmp_path / "out.jsonl.parts"
    store = tag_corpus.Store.open(
        job.output,
        work,
        {
            "model": f"dir:{tiny_model_dir.resolve()}",
            "format": "text",
            "field": None,
            "result": True,
            "chunk_lines": 10,
        },
        force=False,
    )
    info = next(tag_corpus.read_chunks(io.BytesIO(b"other\n" * 10), 10)).info
    store.commit(info, b'{"line": 1}\n' * 10, 0)  # a chunk of another input
    with pytest.raises(JobError, match="chunk_lines"):
        tag_corpus.run(spec(tmp_path, tiny_model_dir, str(source), chunk_lines=5), err=io.StringIO())
    with pytest.raises(JobError, match="lines 1-10 of the input differ"):
        tag_corpus.run(job, err=io.StringIO())
    (work / tag_corpus.shard_name(info, 0)).unlink()
    tag_corpus.run(job, err=io.StringIO())  # the same command goes on
    with pytest.raises(JobError, match="exists"):
        tag_corpus.run(job, err=io.StringIO())  # a finished output is not overwritten ...
    tag_corpus.run(JobSpec(**{**vars(job), "force": True}), err=io.StringIO())  # ... unless asked


def test_only_the_services_own_failures_are_resent():
    def response(status: int, body: bytes) -> requests.Response:
        resp = requests.Response()
        resp.status_code, resp._content = status, body
        return resp

    assert tag_corpus.resend_reason(response(503, b'{"code": 503, "message": "no worker"}')) == "HTTP 503"
    assert tag_corpus.resend_reason(response(500, b'{"code": 500, "message": "Worker died."}')) == "HTTP 500"
    assert tag_corpus.resend_reason(response(507, b"")) == "HTTP 507"
    handler_500 = b'{"error": "internal error answering request 7; the server log has the details", "status": 500}'
    assert tag_corpus.resend_reason(response(500, handler_500)) is None
    assert tag_corpus.resend_reason(response(400, b'{"error": "x", "status": 400}')) is None


def test_plain_progress_lines_give_rate_errors_and_eta():
    out = io.StringIO()
    progress = tag_corpus.Progress(1000, out, every=0.0, tty=False, initial=100, initial_errors=2)
    progress.started -= 10  # ten seconds in
    progress.update(200, 1)
    line = out.getvalue().strip()
    assert line.startswith("tag_corpus: 300 of 1000 texts, ") and ", 3 errors, ETA 00:00:3" in line
    assert 19 < float(line.split(", ")[1].split()[0]) <= 20  # 200 texts in about 10 s: this run's rate


def test_a_second_run_of_the_same_job_is_refused_while_the_first_runs(tmp_path, tiny_model_dir):
    source = tmp_path / "in.txt"
    source.write_bytes(corpus_bytes(5))
    job = spec(tmp_path, tiny_model_dir, str(source))
    with (
        tag_corpus.job_lock(tmp_path / "out.jsonl.parts"),
        pytest.raises(JobError, match=f"another run of this job \\(pid {os.getpid()}\\)"),
    ):
        tag_corpus.run(job, err=io.StringIO())
    assert tag_corpus.run(job, err=io.StringIO()).texts == 5
    assert not (tmp_path / "out.jsonl.parts.lock").exists()
