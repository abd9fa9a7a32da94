"""The committed claims follow from the committed results: ``docs/experiments/claims.json`` and the
table that opens ``docs/experiments/README.md`` are what ``ridehail bench claims`` derives from the
committed JSON files, not numbers typed in by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ridehail.bench.experiments.claims import (
    README_BEGIN,
    README_END,
    ClaimsError,
    build_claims,
    claims_table,
    validate_claims,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "experiments"


def test_claims_json_is_derived_from_the_committed_results() -> None:
    committed = json.loads((DOCS / "claims.json").read_text())
    validate_claims(committed)
    assert committed == build_claims(DOCS)


def test_the_readme_opens_with_the_claims_table() -> None:
    readme = (DOCS / "README.md").read_text()
    table = readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert table == claims_table(json.loads((DOCS / "claims.json").read_text()))
    assert readme.index(README_BEGIN) < readme.index("## ")  # the table comes before the first section


def test_every_claim_object_has_the_documented_shape() -> None:
    claims = json.loads((DOCS / "claims.json").read_text())
    assert [c["id"] for c in claims] == list(range(1, 9))
    for c in claims:
        assert c["verdict"] in ("supported", "refuted", "depends")
        assert isinstance(c["value"], int | float) and c["runs"] >= 5, c
        assert c["iqr"][0] <= c["value"] <= c["iqr"][1]
        assert c["condition"] and c["metric"] and c["unit"]


def test_a_claim_without_a_number_is_refused() -> None:
    claims = json.loads((DOCS / "claims.json").read_text())
    broken = [dict(c) for c in claims]
    broken[2]["value"] = "3x"
    with pytest.raises(ClaimsError, match="claim 3: value must be a number"):
        validate_claims(broken)
    with pytest.raises(ClaimsError, match="ids 1..8"):
        validate_claims(claims[:7])
