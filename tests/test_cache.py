"""hf_transfer.cache: folders built beside their target and renamed into place, once per machine."""

from __future__ import annotations

from hf_transfer.cache import publish_folder


def test_a_folder_another_process_finished_first_is_kept(tmp_path):
    """Two DDP ranks (or two test workers) materialise the same checkpoint: the first finished copy stays, because
    the other process may already be reading it."""
    target = tmp_path / "checkpoint"

    def build_while_another_process_publishes(folder):
        publish_folder(lambda theirs: (theirs / "weights").write_text("theirs"), target)
        (folder / "weights").write_text("ours")

    assert publish_folder(build_while_another_process_publishes, target) == target
    assert (target / "weights").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no staging folder left behind


def test_a_crashed_builds_leftover_is_replaced_and_a_finished_folder_is_not_rebuilt(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "half_written").write_text("")  # no .complete: a build that crashed before the rename
    publish_folder(lambda folder: (folder / "weights").write_text("new"), target)
    assert sorted(p.name for p in target.iterdir()) == [".complete", "weights"]

    def never(_folder):
        raise AssertionError("a finished folder is not built again")

    assert publish_folder(never, target) == target
