"""Serving operations: what runs and ships the service.

``paths`` (repository folders, the shared data), ``retry`` (the one retry loop), ``tsctl``
(start/stop/register/scale a local TorchServe, keys, metrics), ``package_model`` (checkpoint ->
.mar, with the archive's checks), ``agreement`` (how far a lossy path tags like torch fp32),
``corpus`` (the KMOU reader and entity scorer that the checks and the studies share),
``predict`` (the client: requests with timeouts and resends), ``tag_corpus`` (the resumable corpus job:
the service's answers for every line of a file, through the service, in-process or on Ray Data).

The handler's modules (handler/ner_*.py) are imported flat, by file name (``import ner_core``),
as TorchServe imports them inside an archive; nothing in handler/ imports these packages. tsctl
reads a describe answer's workers with the image's own helper (container/kor_ner_runtime.py,
also flat), so the health check and tsctl count READY workers the same way.
"""
