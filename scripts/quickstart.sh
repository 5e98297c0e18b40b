#!/usr/bin/env bash
# One command from a fresh clone to entities on screen: set up, package the embedded demo
# model with the same command you would use for your own checkpoint, start TorchServe,
# register the model, and tag a sample sentence.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PY=.venv/bin/python

echo "== packaging demo_model/ -> model_store/kor_ner.mar"
$PY scripts/package_model.py --checkpoint demo_model --name kor_ner --force

echo "== starting TorchServe (run dir var/, logs in var/logs/)"
$PY scripts/tsctl.py stop >/dev/null || true
$PY scripts/tsctl.py start --register kor_ner.mar

echo "== tagging a sample sentence"
$PY scripts/predict.py "이순신은 조선 중기의 무신이다." "삼성전자는 2024년 3월 서울에서 신제품을 발표했다."

echo "== starting the demo page"
[ -f var/webapp.pid ] && kill "$(cat var/webapp.pid)" 2>/dev/null || true
nohup $PY scripts/webapp.py > var/logs/webapp.log 2>&1 &
echo $! > var/webapp.pid

cat <<'MSG'

Demo page: http://127.0.0.1:8090/   (type a sentence, see its entities)
TorchServe and the page run in the background. Next:
  .venv/bin/python scripts/predict.py "문장을 입력하세요"     # more sentences
  kill $(cat var/webapp.pid); .venv/bin/python scripts/tsctl.py stop   # stop both
MSG
