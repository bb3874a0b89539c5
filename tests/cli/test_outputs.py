"""Output paths are checked before any work: a file where a folder must be, a folder that cannot
be written in, or an image name Pillow cannot write is a one-line usage error (exit code 2)."""

from __future__ import annotations

from tests.cli.runner import one_line_error, run


def test_an_output_under_a_file_is_refused_before_sampling(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error = one_line_error(run("sample", "-c", "pretrained:mnist", "--out", blocker / "grid.png", code=2))
    assert "is a file, not a folder" in error
    error = one_line_error(run("sample", "-c", "pretrained:mnist", "--out", tmp_path / "grid.txt", code=2))
    assert "end it in .png or .jpg" in error
    assert not (tmp_path / "grid.txt").exists()


def test_a_run_folder_under_a_file_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error = one_line_error(run("train", "--steps", "1", "--out", blocker / "run", code=2))
    assert "--out" in error and "is a file, not a folder" in error


def test_a_folder_without_write_permission_is_refused(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):  # what a read-only folder answers (root may write anywhere, so simulate it)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    error = one_line_error(run("sample", "-c", "pretrained:mnist", "--out", tmp_path / "grid.png", code=2))
    assert f"cannot write in {tmp_path} (Permission denied)" in error


def test_writable_outputs_pass_and_nothing_is_created(tmp_path):
    from hybridflow.cli.options import writable_path

    target = tmp_path / "new" / "deeper" / "roc.png"
    assert writable_path(None, None, str(target)) == str(target)
    assert not (tmp_path / "new").exists()  # checked, not created


def test_an_unknown_pretrained_name_is_a_usage_error():
    error = one_line_error(run("eval", "-c", "pretrained:nope", code=2))
    assert "no pretrained model 'nope'" in error and "mnist" in error and "ValueError" not in error
