"""The one reader of JSON from outside (device_agent/bounded_json.py), as the manifest, signing metadata, registry
documents, engine key parts and builder records use it: the bound first, then UTF-8, then the parser."""
from __future__ import annotations

import pytest

from device_agent.bounded_json import loads_bounded
from device_agent.errors import InvalidInput, PermissionDenied
from device_agent.manifest import MAX_MANIFEST_BYTES, Manifest


def refuse(why: str) -> InvalidInput:
    return InvalidInput(f"the document is {why}")


def test_a_document_at_the_bound_parses_and_one_byte_more_is_refused_before_the_parser_sees_it():
    doc = b'{"a": "' + b"x" * 90 + b'"}'
    assert loads_bounded(doc, len(doc), refuse) == {"a": "x" * 90}
    with pytest.raises(InvalidInput, match=f"the document is larger than {len(doc) - 1} bytes"):
        loads_bounded(doc, len(doc) - 1, refuse)
    with pytest.raises(InvalidInput, match="larger than 10 bytes"):  # not JSON either: the bound speaks first
        loads_bounded(b"{" * 11, 10, refuse)


def test_bytes_must_be_utf8_and_json_each_refusal_saying_which():
    with pytest.raises(InvalidInput, match="the document is not UTF-8: "):
        loads_bounded(b'{"a": "\xff"}', 100, refuse)
    with pytest.raises(InvalidInput, match="the document is not JSON: "):
        loads_bounded(b'{"a": ', 100, refuse)
    with pytest.raises(PermissionDenied, match="malformed \\(not JSON: "):  # the caller's own exception
        loads_bounded("nope", 100, lambda why: PermissionDenied(f"malformed ({why})"))


def test_a_manifest_over_its_bound_is_one_line_naming_the_bound():
    with pytest.raises(InvalidInput, match=f"^invalid bundle manifest: larger than {MAX_MANIFEST_BYTES} bytes$"):
        Manifest.from_json(b" " * (MAX_MANIFEST_BYTES + 1))
