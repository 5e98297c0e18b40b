"""The operations library of the Korean NER service: what the scripts, the console commands and
the tests share. The handler's modules (handler/ner_*.py) are imported flat, by file name
(``import ner_core``), as TorchServe imports them inside an archive; nothing in handler/
imports this package.

Foundations (no project imports): ``paths`` (repository folders, the shared data),
``retry`` (the one retry loop), ``load`` (load generation, percentiles).
On the handler: ``corpus`` (KMOU reader, label order, scorer), ``packaging`` (PackageSpec ->
.mar, the archiver command), ``checkpoints`` (synthetic ratsnlp checkpoints).
On TorchServe: ``tsctl`` (start/stop/register/scale, keys, metrics), ``client`` (requests
with timeouts and resends).
Tools: ``benchmark`` (+ ``seed_handler``, the tutorial's handler as its baseline), ``soak``,
``fault_drill``, ``particles_eval``, ``train_demo``, ``webapp`` (+ webapp_page.html).
``cli/``: argparse and one call per tool; scripts/<tool>.py runs it.
"""
