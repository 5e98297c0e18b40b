"""TorchServe handler for Korean NER: glue only, the NER logic lives in ner_core.

One request may be a text or a list of texts; TorchServe hands us a dynamic batch of
requests. Bad requests are answered with a JSON 400 for that request alone, the rest of the
batch is tagged in one pass, and every answer is UTF-8 JSON with its content type set.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ts.torch_handler.base_handler import BaseHandler

import ner_core
from ner_inputs import InputError, ParsedRequest, parse_request
from ner_settings import HandlerSettings

logger = logging.getLogger(__name__)
JSON_UTF8 = "application/json; charset=utf-8"


class KoreanNerHandler(BaseHandler):
    def initialize(self, context):
        model_dir = Path(context.system_properties["model_dir"])
        self.settings = HandlerSettings.from_mapping((context.model_yaml_config or {}).get("handler"))
        started = time.perf_counter()
        self.ner = ner_core.load_model(model_dir, self.settings)
        logger.info(
            "loaded %s: %d labels, vocab %d, settings %s, in %.1f s",
            context.model_name, len(self.ner.labels), self.ner.tokenizer.get_vocab_size(),
            self.settings, time.perf_counter() - started,
        )
        self.initialized = True

    def preprocess(self, data):
        """Each request becomes a ParsedRequest or the InputError that answers it."""
        parsed = []
        for idx, row in enumerate(data):
            try:
                parsed.append(parse_request(
                    row, self._content_type(idx, row),
                    max_chars=self.settings.max_text_chars, max_texts=self.settings.max_texts_per_request,
                ))
            except InputError as err:
                parsed.append(err)
        return parsed

    def inference(self, data):
        """One forward pass (split only by the token budget) over every text of the batch."""
        texts = [text for req in data if isinstance(req, ParsedRequest) for text in req.texts]
        logger.info("batch of %d requests, %d texts", len(data), len(texts))
        predictions = iter(ner_core.predict(self.ner, texts))
        return [
            req if isinstance(req, InputError) else (req, [next(predictions) for _ in req.texts])
            for req in data
        ]

    def postprocess(self, data):
        responses = []
        for idx, item in enumerate(data):
            self.context.set_response_content_type(idx, JSON_UTF8)
            if isinstance(item, InputError):
                logger.info("request %s rejected (%d): %s", self.context.get_request_id(idx), item.status, item)
                self.context.set_response_status(item.status, str(item), idx)
                responses.append(ner_core.dumps(item.body()))
                continue
            request, predictions = item
            answers = [ner_core.to_response(p, self.ner.labels, self.settings.label_names) for p in predictions]
            responses.append(ner_core.dumps(answers if request.is_list else answers[0]))
        return responses

    def _content_type(self, idx, row) -> str:
        """The content type TorchServe recorded for the body parameter of request ``idx``."""
        headers = self.context.get_all_request_header(idx) if self.context else {}
        for name in ("data", "body"):
            if name in row and isinstance(headers.get(name), dict):
                return headers[name].get("content-type") or ""
        return ""
