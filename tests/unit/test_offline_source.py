"""The point-in-time join addresses a feature row by its position in its file, so it
refuses a view whose source is not one Parquet file (a glob or a directory would make
positions ambiguous) and names the view."""

import pytest

from e2i_platform.features.offline import _single_file


def test_a_source_must_be_one_parquet_file(tmp_path):
    one = tmp_path / "patient_features.parquet"
    one.write_bytes(b"")
    assert _single_file(str(one), "patient_features") == str(one)
    for many in (str(tmp_path / "*.parquet"), str(tmp_path)):
        with pytest.raises(ValueError, match=r"patient_features: batch source .* not a single"):
            _single_file(many, "patient_features")
