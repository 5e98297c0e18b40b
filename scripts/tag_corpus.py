"""Tag a whole corpus with the service's NER: one JSONL line per input line, in input order,
{"line": N, ...the REST API's answer for that text...}; resumable (run the same command again
after any interruption: it continues, and the output is the same bytes).

    python scripts/tag_corpus.py news.txt.gz tagged.jsonl --url http://127.0.0.1:8080 --model kor_ner \
        --key-file var/key_file.json
    python scripts/tag_corpus.py docs.jsonl tagged.jsonl --field body --archive model_store/kor_ner.mar
    cat texts.txt | python scripts/tag_corpus.py - tagged.jsonl --model-dir models/kor_ner --ray local

INPUT: one text a line (UTF-8), or JSONL whose --field holds the text; gzip is read as it is.
A line the service would refuse (empty, over the limits, not UTF-8) gets an error line with the
API's status and message; no line is skipped. The work in progress lives in OUTPUT.parts/
(committed chunks and a manifest) until OUTPUT is complete. Exit status: 0 done (error lines
included: the summary counts them), 1 the job stopped (the message says why; the committed work
stays), 2 bad arguments, 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from serving import tag_corpus
from serving.tag_corpus import JobError, JobSpec


def parse_args(argv: list[str] | None) -> tuple[JobSpec, str | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="text or JSONL file (gzip too), or - for stdin")
    parser.add_argument("output", type=Path, help="the JSONL answers (written once complete)")
    way = parser.add_argument_group("the model (one of)")
    way.add_argument("--url", help="a running service's inference address, e.g. http://127.0.0.1:8080")
    way.add_argument("--model-dir", type=Path, help="a packaged model directory, run in-process by the handler")
    way.add_argument("--archive", type=Path, help="a .mar, run in-process with the archive's own model config")
    rest = parser.add_argument_group("through a service (--url)")
    rest.add_argument("--model", help="the model's name at --url")
    rest.add_argument("--key", help="the inference key (visible to other users in the process list: prefer --key-file)")
    rest.add_argument("--key-file", type=Path, help="a file holding the key, or TorchServe's key_file.json")
    rest.add_argument(
        "--concurrency", type=int, default=JobSpec.concurrency, help="requests in flight (default: %(default)s)"
    )
    rest.add_argument(
        "--timeout",
        type=float,
        default=JobSpec.timeout,
        help="seconds to wait for one answer before resending (default: %(default)s)",
    )
    rest.add_argument(
        "--retries",
        type=int,
        default=JobSpec.retries,
        help="resends of one request, backing off from 0.5 s (default: %(default)s)",
    )
    local = parser.add_argument_group("in-process and Ray (--model-dir, --archive)")
    local.add_argument(
        "--model-config",
        type=Path,
        help="model config whose handler: settings --model-dir runs with (default: config/model-config.yaml)",
    )
    local.add_argument("--threads", type=int, help="intra-op threads per model (default: the config's torch_threads)")
    local.add_argument(
        "--ray", metavar="ADDRESS", help="run on Ray Data: 'local' (a Ray started here) or a cluster's address"
    )
    local.add_argument("--actors", type=int, help="Ray actors, each loading the model once (default: CPUs / threads)")
    local.add_argument("--ray-cpus", type=int, help="CPUs of a local Ray (default: all)")
    data = parser.add_argument_group("input and output")
    data.add_argument(
        "--format",
        choices=("auto", *tag_corpus.FORMATS),
        default="auto",
        help="auto: jsonl for .jsonl/.ndjson(.gz) or when --field is given, else text",
    )
    data.add_argument("--field", help="the JSONL field holding the text (default: text)")
    data.add_argument(
        "--no-result",
        dest="result",
        action="store_false",
        help="leave out the per-token result rows (as the header X-NER-Result: false)",
    )
    data.add_argument(
        "--chunk-lines", type=int, default=JobSpec.chunk_lines, help="lines per committed chunk (default: %(default)s)"
    )
    data.add_argument("--work-dir", type=Path, help="where the committed chunks go (default: OUTPUT.parts)")
    data.add_argument("--force", action="store_true", help="overwrite an OUTPUT that no unfinished job is writing")
    data.add_argument(
        "--progress-every",
        type=float,
        default=JobSpec.progress_every,
        help="seconds between progress lines when stderr is not a terminal (default: %(default)s)",
    )
    data.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON (- for stdout)")
    args = parser.parse_args(argv)
    values = vars(args)
    summary_json = values.pop("summary_json")
    for name in ("concurrency", "chunk_lines", "retries", "actors", "ray_cpus", "threads"):
        if values[name] is not None and values[name] < (0 if name == "retries" else 1):
            parser.error(f"--{name.replace('_', '-')} must be at least {0 if name == 'retries' else 1}")
    return JobSpec(**values), summary_json


def main(argv: list[str] | None = None) -> int:
    spec, summary_json = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="tag_corpus: %(levelname)s: %(name)s: %(message)s")
    logging.getLogger("ts").setLevel(logging.ERROR)  # TorchServe's import notes (OpenVINO, TensorRT absent)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop is an interrupt: committed work stays
    try:
        summary = tag_corpus.run(spec)
    except ValueError as err:
        print(f"tag_corpus: error: {err}", file=sys.stderr)
        return 2
    except JobError as err:
        print(f"tag_corpus: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "tag_corpus: interrupted; the committed chunks stay: start the same command again to continue",
            file=sys.stderr,
        )
        return 130
    print(summary.line(), file=sys.stderr)
    if summary_json:
        text = json.dumps(vars(summary), indent=2) + "\n"
        if summary_json == "-":
            sys.stdout.write(text)
        else:
            Path(summary_json).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
