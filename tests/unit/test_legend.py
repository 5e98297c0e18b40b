"""The demo page's legend: the served model's own entity types and names, read from its archive."""

from __future__ import annotations

import json
import zipfile

import yaml

from serving import tsctl
from web import webapp

KLUE = ["B-PS", "I-PS", "B-LC", "I-LC", "B-OG", "I-OG", "B-DT", "I-DT", "B-TI", "I-TI", "B-QT", "I-QT", "O"]


def archive(path, labels, handler=None):
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr("label_map.txt", "\n".join(labels) + "\n")
        mar.writestr(
            "MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "m", "configFile": "model-config.yaml"}})
        )
        mar.writestr(
            "model-config.yaml", yaml.safe_dump({"minWorkers": 1, **({"handler": handler} if handler else {})})
        )
    return path


def test_a_klue_model_names_its_own_types(tmp_path):
    names = tsctl.archive_label_names(archive(tmp_path / "klue.mar", KLUE))
    assert names == {"PS": "인명", "LC": "지명", "OG": "기관명", "DT": "날짜", "TI": "시간", "QT": "수량"}


def test_label_names_in_the_model_config_rename_and_unknown_types_keep_their_own(tmp_path):
    labels = ["B-PER", "I-PER", "B-GENE", "I-GENE", "O"]
    names = tsctl.archive_label_names(archive(tmp_path / "m.mar", labels, {"label_names": {"PER": "사람"}}))
    assert names == {"PER": "사람", "GENE": "GENE"}


def test_without_a_served_model_the_legend_is_empty(tmp_path):
    assert webapp.served_label_names(tmp_path, "kor_ner") == {}
    page = webapp.render_page("kor_ner", {})
    assert json.loads(page.split('id="label-names">')[1].split("</script>")[0]) == {}
