"""Zammad's expected results (corpus/zammad/mailNNN.yml) for its mailNNN.box emails."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Oracle:
    box: Path
    subject: str
    from_email: str
    attachments: tuple[str, ...]  # file names, Zammad's own message.html left out


def norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def load(corpus: Path) -> list[Oracle]:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: Any, suffix: str, node: Any) -> object:  # Ruby type tags: read as plain data
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", any_tag)
    out = []
    for yml in sorted((corpus / "zammad").glob("mail*.yml")):
        box = yml.with_suffix(".box")
        if not box.exists():
            continue
        data = yaml.load(yml.read_text(encoding="utf-8"), Loader=Loader) or {}
        out.append(
            Oracle(
                box=box,
                subject=norm(str(data.get("subject") or "")),
                from_email=str(data.get("from_email") or "").strip().lower(),
                attachments=tuple(
                    str(a.get("filename") or "")
                    for a in data.get("attachments") or []
                    if str(a.get("filename")) != "message.html"
                ),
            )
        )
    return out
