"""How a user's file is read (pneumo/pictures.py) and what the scripts say about it (issue 35, items 4-6):
EXIF orientation, animated pictures, films at the dataset's own size, paths that cannot be opened, and an
index flag given the checkpoint."""
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, error_line, run_cli
from pneumo.errors import UserError
from pneumo.pictures import DATASET_NOTE, picture_notes, read_picture
from pneumo.screening import file_flags
from task1 import evaluate
from task3 import query

ORIENTATION = 0x0112


def upright_film(sample_film) -> Image.Image:
    """A real film, made smaller so the tests are quick: tall and narrow would read differently sideways."""
    img = read_picture(sample_film)
    img.thumbnail((300, 300))
    return img


def stored_sideways(img: Image.Image, path, orientation=6):
    """The film as a phone stores a picture taken upright but held sideways: the pixels turned 90°
    anticlockwise and the EXIF tag saying 'turn me 90° clockwise' (orientation 6)."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    return path


def test_exif_orientation_is_applied(sample_film, tmp_path):
    upright = upright_film(sample_film)
    path = stored_sideways(upright, tmp_path / "phone.png")
    assert Image.open(path).size == upright.size[::-1]  # stored sideways
    read = read_picture(path)
    assert read.size == upright.size and np.array_equal(np.asarray(read), np.asarray(upright))
    assert any("EXIF orientation (on its side, turned 90° clockwise)" in n for n in picture_notes(path))


def test_a_sideways_phone_photo_gets_the_upright_films_reading(sample_film, tmp_path):
    """The issue's case end to end: the film stored with orientation 6 (JPEG, as a phone writes it) gets the
    probability of the same film upright, and the script says it turned it."""
    upright = upright_film(sample_film)
    upright.save(tmp_path / "upright.jpeg", quality=95)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpeg", quality=95, exif=exif)
    result = run_cli(evaluate, "--images", tmp_path / "upright.jpeg", tmp_path / "phone.jpeg", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "note: phone.jpeg: turned upright from the file's EXIF orientation" in result.stdout.replace(str(tmp_path) + "/", "")
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().endswith(".jpeg")]
    p = {row[-1].rsplit("/", 1)[-1]: float(row[0]) for row in rows}
    assert abs(p["phone.jpeg"] - p["upright.jpeg"]) < 0.02, p
    assert rows[0][2] == rows[1][2]  # the same status: the sideways one is not withheld


def test_an_animated_picture_is_read_from_its_first_frame_with_a_note(tmp_path):
    frames = [Image.fromarray(np.full((80, 80), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "cine.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(read_picture(tmp_path / "cine.gif")).mean() == pytest.approx(40, abs=1)
    assert "an animated picture of 2 frames: only the first frame is read" in picture_notes(tmp_path / "cine.gif")
    frames[0].save(tmp_path / "still.gif")
    assert picture_notes(tmp_path / "still.gif") == []


def test_a_film_at_the_datasets_own_size_is_read_and_other_small_pictures_are_not(tmp_path):
    from pneumo.data import load_split
    images, _ = load_split(REPO / "data", "test", 28) if (REPO / "data" / "pneumoniamnist.npz").exists() else (None, None)
    film = images[0] if images is not None else np.uint8(np.random.default_rng(0).integers(0, 256, (28, 28)))
    Image.fromarray(film).save(tmp_path / "grey.png")
    Image.fromarray(film).convert("RGB").save(tmp_path / "grey_rgb.png")  # grey saved as RGB: still a film
    colour = np.stack([film, film // 2, 255 - film], axis=-1).astype(np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    Image.fromarray(film[:27, :27]).save(tmp_path / "cropped.png")
    Image.fromarray(film).resize((40, 40)).save(tmp_path / "forty.png")
    assert file_flags(tmp_path / "grey.png") == [] and file_flags(tmp_path / "grey_rgb.png") == []
    assert DATASET_NOTE in picture_notes(tmp_path / "grey.png")
    for name in ("colour.png", "cropped.png", "forty.png"):
        assert "too small to be a radiograph" in file_flags(tmp_path / name)[0], name
        assert DATASET_NOTE not in picture_notes(tmp_path / name)


def test_a_symlink_loop_is_the_users_input_not_our_bug(tmp_path):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(UserError, match="cannot be opened: Too many levels of symbolic links"):
        read_picture(loop)
    result = run_cli(evaluate, "--images", loop, "--out", tmp_path / "out")
    assert result.returncode == 1 and "loop.png cannot be opened" in error_line(result)
    assert "internal error" not in result.stderr
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(UserError, match="cannot be opened: a folder"):
        read_picture(tmp_path / "folder.png")


def test_the_checkpoint_given_as_the_index_is_named_for_what_it_is(tmp_path):
    result = run_cli(query, "--index", REPO / "models" / "task1_model.pth", "--out", tmp_path)
    line = error_line(result)
    assert result.returncode == 1 and "is a classifier checkpoint (Task 1), not a Task 3 index" in line
    assert "not found" not in line and "--checkpoint" in line
    (tmp_path / "index.faiss").write_bytes(b"not an index")
    other = run_cli(query, "--index", tmp_path / "index.faiss", "--out", tmp_path)
    assert other.returncode == 1 and "is not a Task 3 index" in error_line(other)
