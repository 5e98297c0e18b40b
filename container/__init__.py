"""The container image's scripts (container/*.py). The image runs them side by side from
/opt/kor-ner, importing each other by file name; from the repository, ``container.front_door``
(HAProxy's config and the config guard) is imported as a module of this package."""
