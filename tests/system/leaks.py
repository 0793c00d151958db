"""Searching artefacts for secrets in every form they could take: raw, URL-encoded, base64, hex.

A secret copied into a log line, a response or a file can be transformed on the
way (percent-encoded in a URL, base64 in a Basic header or a JSON blob, hex in a
dump). Each secret becomes a set of needles; a base64 needle is the part of the
encoding that does not depend on the bytes around the secret, for each of the
three alignments the secret can have inside a longer encoded value.

Thousands of needles over megabytes of WAL would take minutes with one `find` each;
`Needles.search` instead indexes the 8-byte windows starting in the first 8 bytes of
each needle and probes the artefact at every 8th byte: any occurrence of a needle of
15 bytes or more has a probe in its first 8 bytes, and each candidate is then checked
exactly. Shorter needles are
searched one by one.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MIN_NEEDLE = 10  # shorter fragments could occur by chance in random data
WINDOW = 8  # bytes of an indexed window
STRIDE = 8  # probe every STRIDE-th byte: needles of WINDOW + STRIDE - 1 bytes or more cannot slip by


def _b64_cores(raw: bytes) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    n = len(raw)
    for align in range(3):
        start = -(-8 * align // 6)  # first character made of the secret's bits only
        end = (8 * (align + n)) // 6  # last one
        padded = b"\0" * align + raw
        found[f"base64/{align}"] = base64.b64encode(padded)[start:end]
        found[f"base64url/{align}"] = base64.urlsafe_b64encode(padded)[start:end]
    return found


def variants(secret: str) -> dict[str, bytes]:
    """Every form of `secret` worth searching for, by name."""
    raw = secret.encode("utf-8")
    forms = {
        "raw": raw,
        "url": urllib.parse.quote(secret, safe="").encode(),
        "url+": urllib.parse.quote_plus(secret).encode(),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        **_b64_cores(raw),
    }
    return {name: value for name, value in forms.items() if len(value) >= MIN_NEEDLE}


@dataclass
class Needles:
    """Secrets by label (what they are), expanded into their searchable forms."""

    by_needle: dict[bytes, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    _index: dict[bytes, list[tuple[bytes, int]]] | None = field(default=None, repr=False)

    def add(self, label: str, values: Iterable[str | None]) -> None:
        for value in values:
            if not value or len(value) < 8:
                continue
            self.secrets.add(value)
            for form, needle in variants(value).items():
                self.by_needle.setdefault(needle, f"{label} ({form})")
        self._index = None

    def __len__(self) -> int:
        return len(self.by_needle)

    def _windows(self) -> dict[bytes, list[tuple[bytes, int]]]:
        if self._index is None:
            self._index = {}
            for needle in self.by_needle:
                if len(needle) >= WINDOW + STRIDE - 1:
                    for offset in range(STRIDE):  # the probe lands within the first STRIDE bytes
                        self._index.setdefault(needle[offset : offset + WINDOW], []).append((needle, offset))
        return self._index

    def search(self, blob: bytes) -> list[str]:
        """The labels of every needle found in `blob`."""
        index = self._windows()
        found: set[bytes] = set()
        for at in range(0, len(blob) - WINDOW + 1, STRIDE):
            for needle, offset in index.get(blob[at : at + WINDOW], ()):
                if at >= offset and blob.startswith(needle, at - offset):
                    found.add(needle)
        short = [n for n in self.by_needle if len(n) < WINDOW + STRIDE - 1]
        found.update(n for n in short if n in blob)
        return sorted(self.by_needle[n] for n in found)

    def search_all(self, artefacts: Mapping[str, bytes]) -> dict[str, list[str]]:
        """{artefact name: labels found}, only for artefacts with a hit."""
        hits = {name: self.search(blob) for name, blob in artefacts.items()}
        return {name: found for name, found in hits.items() if found}
