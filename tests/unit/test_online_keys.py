"""The platform's entity keys are byte for byte the keys Feast writes and reads."""

import pytest

from e2i_platform.features.online import entity_key_bytes, entity_key_prefix


@pytest.mark.parametrize(
    ("join_keys", "values"),
    [
        (("patient_id",), ("PAT00000042",)),
        (("region", "brand"), ("northeast", "Kisqali")),  # given unsorted
        (("hcp_id",), ("HCP-é✓",)),  # non-ASCII: lengths are of the UTF-8 bytes
        (("patient_id",), ("",)),
    ],
)
def test_entity_key_bytes_equal_feast_serialization(join_keys, values):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    feast_key = serialize_entity_key(
        EntityKey(join_keys=list(join_keys), entity_values=[Value(string_val=v) for v in values]),
        entity_key_serialization_version=3,
    )
    by_name = dict(zip(join_keys, values, strict=True))
    ordered = sorted(join_keys)
    ours = entity_key_bytes(entity_key_prefix(join_keys), [by_name[k] for k in ordered])
    assert ours == feast_key
