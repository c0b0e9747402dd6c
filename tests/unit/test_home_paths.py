"""Records name their home's files relative to the home, and a record read in a copy of
the home at another path names the copy's file: a relative path, an absolute one of
this home, or (written before the rule) an absolute one in another home's layout.
Anything else is refused by name, never read."""

from pathlib import Path

import pytest

from e2i_platform.lib.home_paths import resolve, stored
from e2i_platform.training.model_run import model_path
from e2i_platform.training.run_files import MODEL_FILE_LAYOUT, VARIANT_LAYOUT

MODEL = Path("models/discontinuation_lgbm/spec-6da0dcbe_exec-8179c19f/v3/model.txt")


def test_a_stored_path_is_relative_to_its_home_and_resolves_back(tmp_path):
    home = tmp_path / "home"
    text = stored(home, home / MODEL)
    assert text == MODEL.as_posix()
    assert resolve(home, text, MODEL_FILE_LAYOUT, "record") == home / MODEL
    assert resolve(home, MODEL.parent.as_posix(), VARIANT_LAYOUT, "record") == home / MODEL.parent
    with pytest.raises(ValueError, match="is not under the home"):
        stored(home, tmp_path / "elsewhere" / "model.txt")


def test_a_home_reached_through_a_symlink_is_the_same_home(tmp_path):
    home = tmp_path / "home"
    (home / MODEL).parent.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(home)
    assert stored(link, home / MODEL) == MODEL.as_posix()
    assert resolve(link, str(home / MODEL), MODEL_FILE_LAYOUT, "record") == home / MODEL


def test_an_old_absolute_path_of_another_home_names_this_homes_file(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "restored" / "e2i"
    record = {"model_file": str(original / MODEL)}  # as records were written before
    assert model_path(copy, record, "release r1") == copy / MODEL
    # One of this home is used as it is.
    assert model_path(copy, {"model_file": str(copy / MODEL)}, "r") == copy / MODEL


@pytest.mark.parametrize(
    "recorded",
    [
        "/srv/other/models/discontinuation_lgbm/v3/model.txt",  # not the layout
        "/srv/other/warehouse/trained_model.json",
        "../other/" + MODEL.as_posix(),  # relative, leaving the home
    ],
)
def test_a_path_outside_the_layout_is_refused_naming_the_record(tmp_path, recorded):
    with pytest.raises(ValueError, match=r"release r7: model_file: .*(layout|leaves)") as caught:
        model_path(tmp_path / "home", {"model_file": recorded}, "release r7")
    assert recorded in str(caught.value)


def test_in_an_object_store_a_record_names_the_object_relative_to_the_store():
    from upath import UPath

    root = UPath("s3://bucket/prefix")
    text = stored(root, root.joinpath(*MODEL.parts))
    assert text == MODEL.as_posix()
    assert str(resolve(root, text, MODEL_FILE_LAYOUT, "record")) == f"s3://bucket/prefix/{text}"
    # A record written on a home before (absolute, in the layout): the store's object.
    old = str(Path("/srv/old-home") / MODEL)
    assert str(model_path(root, {"model_file": old}, "r")) == f"s3://bucket/prefix/{text}"
    with pytest.raises(ValueError, match="is not under the store"):
        stored(root, UPath("s3://bucket/prefix-other") / MODEL.as_posix())
    for recorded in (
        "../other/" + MODEL.as_posix(),
        "/srv/other/warehouse/trained_model.json",
        f"s3://elsewhere/{MODEL.as_posix()}",
    ):
        with pytest.raises(ValueError, match=r"release r7: model_file: .*(layout|leaves)"):
            model_path(root, {"model_file": recorded}, "release r7")
