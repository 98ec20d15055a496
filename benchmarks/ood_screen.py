"""The non-chest pictures the out-of-distribution screen is measured on, written as files (PNG, or the DICOM
files as they are) so that the screen sees them the way a user's upload reaches it. Two sets, kept apart:

- "tune": the set the screen's design was chosen on (which features, which distance, which cut):
  scikit-image's bundled sample pictures, 100 of scikit-learn's digits (upsampled), and 100 generated
  pictures (colour shapes on noise, text pages, grey gradients, noise, smooth colour blobs; seed 0).
- "held_out": written before the screen's code and run once it was finished: the faces scikit-learn's
  and scikit-image's wheels bundle (LFW subset, upsampled), crops of scikit-learn's two sample photographs,
  another 100 digits, 100 generated pictures of other kinds (stripes and checkerboards, large-type
  signs, documents with boxes and rules, colour gradients, salt-and-pepper grey; seed 1), and every
  pydicom bundled test file of another modality than a chest radiograph (CT, MR, ultrasound, nuclear
  medicine, secondary captures) whose short side is at least 64 px.

Nothing here is a chest film. Used by benchmarks/ood_screen.py.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIDE = 256
TUNE_KINDS = ("colour_shapes_on_noise", "text_page", "grey_gradient", "uniform_noise", "colour_blobs")
HELD_OUT_KINDS = ("stripes_or_checkerboard", "large_type_sign", "ruled_document", "colour_gradient", "salt_and_pepper_grey")


def _save(array_or_image, path: Path) -> Path:
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    img.save(path)
    return path


def _uint8(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = a.astype(float)
        a = 255 * (a - a.min()) / max(float(np.ptp(a)), 1e-9)
    return a.astype(np.uint8)


def skimage_pictures(out: Path) -> list:
    """Every 2-D or colour sample picture scikit-image's wheel holds (those needing a download are skipped)."""
    import skimage.data as sd
    paths = []
    for name in sorted(sd.__all__):
        if name in ("download_all", "data_dir", "file_hash", "lbp_frontal_face_cascade_filename", "lfw_subset"):
            continue
        try:
            a = np.asarray(getattr(sd, name)())
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - a picture that needs a download is not in the wheel (under pytest
            continue           # scikit-image raises pytest's Skipped, a BaseException, instead of its error)
        if a.ndim == 3 and a.shape[-1] not in (3, 4):
            a = a[a.shape[0] // 2]  # a volume: its middle slice
        if a.ndim == 4:
            a = a[a.shape[0] // 2, ..., 0] if a.shape[-1] not in (3, 4) else a[a.shape[0] // 2]
        if a.ndim in (2, 3):
            paths.append(_save(_uint8(a), out / f"skimage_{name}.png"))
    return paths


def digits(out: Path, seed: int, n: int = 100, exclude=()) -> list:
    from sklearn.datasets import load_digits
    images = load_digits().images
    pool = np.setdiff1d(np.arange(len(images)), np.asarray(exclude, dtype=int))
    chosen = np.random.default_rng(seed).choice(pool, n, replace=False)
    return [_save(Image.fromarray(_uint8(images[i] * 255 / 16)).resize((SIDE, SIDE), Image.Resampling.BICUBIC),
                  out / f"digits_{i}.png") for i in chosen]


def generated_tune(out: Path, n: int = 100, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        kind = i % 5
        if kind == 0:  # colour shapes on noise
            img = Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(img)
            for _ in range(6):
                x, y = rng.integers(0, SIDE, 2)
                r = rng.integers(10, 80)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        elif kind == 1:  # text page
            img = Image.new("L", (SIDE, SIDE), 255)
            draw = ImageDraw.Draw(img)
            for line in range(12):
                draw.text((8, 8 + line * 20), "".join(chr(c) for c in rng.integers(97, 123, 30)), fill=0)
        elif kind == 2:  # grey gradient
            a = (np.linspace(0, 255, SIDE)[None, :] * rng.uniform(0.3, 1)
                 + np.linspace(0, 255, SIDE)[:, None] * rng.uniform(0, 0.7))
            img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        elif kind == 3:  # uniform noise
            img = Image.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8))
        else:  # smooth colour blobs
            img = Image.fromarray(_uint8(rng.normal(size=(8, 8, 3)))).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
        paths.append(_save(img, out / f"{TUNE_KINDS[kind]}_{i}.png"))
    return paths


def generated_held_out(out: Path, n: int = 100, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=48)
    paths = []
    for i in range(n):
        kind = i % 5
        if kind == 0:  # stripes or a checkerboard, random period and angle
            period = rng.integers(4, 64)
            yy, xx = np.mgrid[:SIDE, :SIDE]
            angle = rng.uniform(0, np.pi)
            a = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
            if rng.random() < 0.5:
                a = a * np.sin((-xx * np.sin(angle) + yy * np.cos(angle)) * 2 * np.pi / period)
            img = Image.fromarray(_uint8(a > 0))
        elif kind == 1:  # a sign in large type
            img = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(img)
            for line in range(3):
                draw.text((10, 20 + 70 * line), "".join(chr(c) for c in rng.integers(65, 91, 6)),
                          fill=tuple(int(v) for v in rng.integers(0, 256, 3)), font=font)
        elif kind == 2:  # a document: boxes, rules and a few words
            img = Image.new("L", (SIDE, SIDE), int(rng.integers(200, 256)))
            draw = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(3, 9))):
                x0, y0 = rng.integers(0, SIDE - 40, 2)
                draw.rectangle([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(10, 60)], outline=0, width=2)
            for y in range(20, SIDE, int(rng.integers(12, 30))):
                draw.line([10, y, SIDE - 10, y], fill=int(rng.integers(0, 120)))
        elif kind == 3:  # colour gradient
            c0, c1 = rng.integers(0, 256, (2, 3))
            t = np.linspace(0, 1, SIDE)[None, :, None]
            img = Image.fromarray(np.repeat((c0 * (1 - t) + c1 * t), SIDE, axis=0).astype(np.uint8))
        else:  # salt and pepper on a grey level
            a = np.full((SIDE, SIDE), rng.integers(40, 220), dtype=np.uint8)
            mask = rng.random((SIDE, SIDE))
            a[mask < 0.05], a[mask > 0.95] = 0, 255
            img = Image.fromarray(a)
        paths.append(_save(img, out / f"{HELD_OUT_KINDS[kind]}_{i}.png"))
    return paths


def faces(out: Path, n: int = 100, seed: int = 1) -> list:
    """Faces from the LFW subset scikit-image bundles (25x25), upsampled so the size rule does not decide."""
    import skimage.data as sd
    stack = sd.lfw_subset()
    chosen = np.random.default_rng(seed).choice(len(stack), min(n, len(stack)), replace=False)
    return [_save(Image.fromarray(_uint8(stack[i])).resize((SIDE, SIDE), Image.Resampling.BICUBIC), out / f"face_{i}.png")
            for i in chosen]


def photo_crops(out: Path, n: int = 20, seed: int = 1) -> list:
    """Square crops (128-427 px) of scikit-learn's two sample photographs."""
    from sklearn.datasets import load_sample_images
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(128, min(photo.shape[:2]) + 1))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        paths.append(_save(photo[y:y + side, x:x + side], out / f"photo_{i}.png"))
    return paths


def other_dicom() -> list:
    """pydicom's bundled test files of other modalities than CR/DX with a short side of at least 64 px
    whose pixels this project can read (the rest are skipped: they are not pictures a user would bring)."""
    import pydicom
    from pydicom.data import get_testdata_files

    from pneumo.errors import UserError
    from pneumo.pictures import read_picture
    chosen = []
    for path in sorted(get_testdata_files("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - pydicom ships deliberately broken files
            continue
        if ds.get("Modality") in ("CR", "DX") or min(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) < 64:
            continue
        try:
            read_picture(path)
        except (UserError, Exception):  # noqa: BLE001 - unreadable here: not a picture for this benchmark
            continue
        chosen.append(Path(path))
    return chosen


def tune_set(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return {"skimage sample pictures": skimage_pictures(out), "digits (100, seed 0)": digits(out, 0),
            "generated (seed 0)": generated_tune(out)}


def held_out_set(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tuned_digits = np.random.default_rng(0).choice(1797, 100, replace=False)
    return {"LFW faces (100)": faces(out), "sample photo crops (20)": photo_crops(out),
            "digits (another 100)": digits(out, 1, exclude=tuned_digits),
            "generated, other kinds (seed 1)": generated_held_out(out), "other-modality DICOM": other_dicom()}


# ---- the measurement -------------------------------------------------------------------------------
def parse_args(argv=None):
    import argparse

    from pneumo.retrieval import DEFAULT_INDEX
    from pneumo.runtime import DEFAULT_RUN
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("models/task1_model.pth"), help="classifier (default the shipped one)")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"archive holding the reference (default {DEFAULT_INDEX})")
    p.add_argument("--data_root", type=Path, default=Path("data"), help="folder of pneumoniamnist.npz (default data)")
    p.add_argument("--samples", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "samples",
                   help="folder of real full-size chest X-rays in normal/ and pneumonia/ (default ../shared/samples)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN})")
    return p.parse_args(argv)


def flagged_files(clf, archive, paths):
    """Which files the screen flags, each read as a user's upload is (pneumo.pictures.load_image_file)."""
    from pneumo.pictures import load_image_file
    from pneumo.screening import screen_inputs
    images = np.stack([load_image_file(p, clf.image_size) for p in paths])
    return [bool(f) for f in screen_inputs(clf, images, [str(p) for p in paths], archive)], images


def main(args):
    import tempfile

    from pneumo.archive import ArchiveSource
    from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
    from pneumo.classifier import Classifier
    from pneumo.data import load_split
    from pneumo.model import EMBEDDING_DIM
    from pneumo.screening import describe_reference, screen_inputs

    check_writable(args.out)
    clf = Classifier.load(args.checkpoint)
    archive = ArchiveSource(index=args.index).open(clf.sha256, EMBEDDING_DIM, args.data_root)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, make in (("tune", tune_set), ("held_out", held_out_set)):
            for group, paths in make(Path(tmp) / set_name).items():
                flags, _ = flagged_files(clf, archive, paths)
                rows.append({"set": set_name, "group": group, "kind": "not a chest film", "n": len(paths),
                             "flagged": int(sum(flags)),
                             "missed": [Path(p).name for p, f in zip(paths, flags) if not f]})
    for split in ("val", "test"):
        images, _ = load_split(args.data_root, split, clf.image_size)
        flags = [bool(f) for f in screen_inputs(clf, images, None, archive)]
        rows.append({"set": "cut" if split == "val" else "held_out", "group": f"PneumoniaMNIST {split}",
                     "kind": "chest film", "n": len(flags), "flagged": int(sum(flags))})
    samples = sorted(args.samples.glob("*/*.jpeg"))
    if samples:
        flags, _ = flagged_files(clf, archive, samples)
        rows.append({"set": "held_out", "group": "full-size sample X-rays (../shared/samples)", "kind": "chest film",
                     "n": len(flags), "flagged": int(sum(flags)),
                     "wrongly_flagged": [p.name for p, f in zip(samples, flags) if f]})
    summary = {}
    for set_name in ("tune", "held_out"):
        for kind in ("not a chest film", "chest film"):
            chosen = [r for r in rows if r["set"] == set_name and r["kind"] == kind]
            if chosen:
                n, flagged = sum(r["n"] for r in chosen), sum(r["flagged"] for r in chosen)
                summary[f"{set_name}: {kind}"] = {"n": n, "flagged": flagged, "rate": flagged / n}
    result = {"checkpoint_sha256": clf.sha256, "reference": describe_reference(archive[1].ood), "groups": rows,
              "summary": summary, "goal": "at least 99 % of non-chest pictures flagged, at most 2 % of real films"}
    write_json_atomic(args.out / "ood_screen.json", result)
    write_text_atomic(args.out / "ood_screen.md", markdown(result))
    print(markdown(result))
    return result


def markdown(result):
    ref = result["reference"]
    md = ["# The out-of-distribution screen: pictures that are not chest films, and real films", "",
          "Written by `python benchmarks/ood_screen.py --out reports` (shipped checkpoint and archive; about a minute on 2 cores).",
          "", f"Screen (`pneumo/screening.py`): too small (short side < 64 px), near-constant, or Mahalanobis distance "
          f"of the classifier's 512-d features to the nearer train class mean (probabilistic-PCA covariance, "
          f"{len(ref.get('variances', [])) or 32} components) beyond {ref['threshold'] ** 0.5:.1f}, the "
          f"{ref['percentile']:g}th percentile of the {ref['n_val']} val films. Goal: {result['goal']}.", "",
          "The tuning set is what the screen's design (features, distance, cut) was chosen on; the held-out set "
          "(non-chest pictures of other sources and kinds, the test split, the sample X-rays) was written before "
          "the screen's code and measured once it was finished. The list of sets is in `benchmarks/ood_screen.py`.", "",
          "| set | pictures | kind | n | flagged | rate |", "|---|---|---|---|---|---|"]
    md += [f"| {r['set']} | {r['group']} | {r['kind']} | {r['n']} | {r['flagged']} | {100 * r['flagged'] / r['n']:.1f} % |"
           for r in result["groups"]]
    md += ["", "| summary | n | flagged | rate |", "|---|---|---|---|"]
    md += [f"| {name} | {s['n']} | {s['flagged']} | {100 * s['rate']:.1f} % |" for name, s in result["summary"].items()]
    md += [""]
    for name in ("tune", "held_out"):
        caught, real = result["summary"][f"{name}: not a chest film"], result["summary"].get(f"{name}: chest film")
        met = caught["rate"] >= 0.99 and (real is None or real["rate"] <= 0.02)
        md.append(f"- {name.replace('_', '-')}: {100 * caught['rate']:.1f} % of non-chest pictures flagged"
                  + (f", {100 * real['rate']:.1f} % of real films" if real else "")
                  + (": the goal is met." if met else ": the goal is **missed**."))
    missed = [(r["group"], m) for r in result["groups"] for m in r.get("missed", [])]
    if missed:
        md += ["", "Non-chest pictures the screen let through: " + ", ".join(f"{m} ({g})" for g, m in missed) + "."]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    from pneumo.errors import run_script
    run_script("ood_screen", main, parse_args)
