"""The command-line tools: argparse and one call into the ops library each.

scripts/<name>.py runs ``ops.cli.<name>.main``; so do the console commands that
pyproject.toml declares (``ner-tsctl``, ``ner-package``, ...).
"""
