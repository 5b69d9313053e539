"""``edgesearch.sample_data``'s whole images: the real nuclei at native resolution, split in space by rows,
and its command line. (The tiles, and training on them, are in tests/trainer/test_real_data.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgesearch.errors import UserError
from edgesearch.sample_data import (
    WHOLE_TRAIN_ROWS,
    WHOLE_VAL_ROWS,
    main,
    nuclei_arrays,
    whole_name,
    write_tiles,
    write_whole,
)
from edgesearch.trainer.config import DataConfig, ModelConfig
from edgesearch.trainer.data import build_datasets

SPLITS = {"train": WHOLE_TRAIN_ROWS, "val": WHOLE_VAL_ROWS}


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_whole(tmp_path_factory.mktemp("whole"))


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def files(folder: Path) -> list[Path]:
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


@pytest.mark.slow  # the first run fetches the source with pip
def test_whole_images_are_the_source_rows_at_native_resolution(whole: Path) -> None:
    image, labels = nuclei_arrays()
    shapes = {}
    for split, regions in SPLITS.items():
        assert sorted(p.name for p in (whole / split / "images").iterdir()) == sorted(map(whole_name, regions))
        for start, stop in regions:
            pixels = read(whole / split / "images" / whole_name((start, stop)))
            mask = read(whole / split / "masks" / whole_name((start, stop)))
            shapes[(split, start)] = pixels.shape
            assert pixels.dtype == np.uint16 and np.array_equal(pixels, image[start:stop])
            assert np.issubdtype(mask.dtype, np.integer) and np.array_equal(mask, labels[start:stop])
            assert len(np.unique(mask)) > 20  # instance labels, one id per nucleus, not binarised
    assert shapes == {("train", 0): (192, 512), ("train", 192): (192, 512), ("val", 384): (128, 512)}


@pytest.mark.slow  # the first run fetches the source with pip
def test_no_validation_row_is_in_a_training_image(whole: Path) -> None:
    training = {row.tobytes() for path in (whole / "train" / "images").iterdir() for row in read(path)}
    validation = [row.tobytes() for path in (whole / "val" / "images").iterdir() for row in read(path)]
    assert len(validation) == 128 and len(training) == 384  # every source row is distinct
    assert not training.intersection(validation)


@pytest.mark.slow  # the first run fetches the source with pip
def test_whole_images_pass_the_trainers_data_check(whole: Path) -> None:
    config = DataConfig(root=whole, image_size=128, batch_size=2)
    # The check `edgesearch train` runs first.
    train, val = build_datasets(config, model=ModelConfig(in_channels=1), seed=0)
    assert (len(train), len(val)) == (2, 1)


@pytest.mark.slow  # the first run fetches the source with pip
def test_whole_keeps_a_complete_folder_and_refuses_one_of_tiles(tmp_path: Path) -> None:
    assert main([str(tmp_path / "whole"), "--whole"]) == 0
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "whole").rglob("*.png")}
    assert len(written) == 6 and files(tmp_path / "whole") == sorted(p.relative_to(tmp_path / "whole") for p in written)
    assert main(["--whole", str(tmp_path / "whole")]) == 0
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "whole").rglob("*.png")} == written

    tiles = write_tiles(tmp_path / "tiles")
    before = files(tiles)
    with pytest.raises(UserError, match="other image files"):
        write_whole(tiles)  # the trainer would mix tiles and whole images in one split
    assert files(tiles) == before


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["OUT", "--wholes"], ["OUT", "--whole", "--whole"], [], ["OUT", "OTHER"], ["OUT", "-w"]],
    ids=["unknown-option-alone", "unknown-option", "twice", "no-dir", "two-dirs", "short-option"],
)
def test_bad_usage_prints_one_line_exits_2_and_writes_nothing(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "usage: python -m edgesearch.sample_data OUT_DIR [--whole]" in err
    assert not any(tmp_path.iterdir())


def test_whole_into_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("")
    assert main([str(tmp_path / "out"), "--whole"]) == 2
    assert f"OUT_DIR {tmp_path / 'out'}: exists and is not a folder" in capsys.readouterr().err
