"""Grad-CAM maps (pytorch-grad-cam), their faithfulness (deletion test) and a readable overlay gallery."""
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tqdm.auto import tqdm

from .data import normalize

# Stage 4 (4x4 at 28 px) rather than stage 3 (7x7): on val its maps are the more faithful by the
# deletion test (reports/task1_gradcam_faithfulness_val.json, task1/gradcam.py --faithfulness
# --split val), it is the most class-specific stage, and a 4x4 grid still resolves the left/right,
# upper/lower lung zones that the reports speak of. Stage 3 stays available (--layer layer3).
DEFAULT_LAYER = "layer4"
DISPLAY_SIZE = 224
# Denser where it matters: most of the probability change happens in the first third removed.
DELETION_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def gradcam_maps(model, images_uint8, normalization, device, target_classes=None,
                 layer=DEFAULT_LAYER, batch_size=64, desc=None):
    """Grad-CAM maps (N, H, W) in [0, 1] at input resolution, and the target class of each image
    (the predicted class unless given). `desc` shows a progress bar over the batches."""
    model.eval()
    images = torch.as_tensor(np.asarray(images_uint8))
    maps, targets_used = [], []
    with GradCAM(model=model, target_layers=[model.stage_outputs()[layer]]) as cam:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=desc is None, leave=False):
            x = normalize(images[start:start + batch_size], normalization).to(device)
            if target_classes is None:
                with torch.no_grad():
                    classes = model(x).argmax(dim=1).tolist()
            else:
                classes = [int(c) for c in target_classes[start:start + batch_size]]
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
            targets_used.extend(classes)
    return np.concatenate(maps), np.asarray(targets_used)


def deletion_curves(model, images_uint8, maps, target_classes, normalization, device,
                    fractions=DELETION_FRACTIONS, batch_size=256, desc=None):
    """Deletion test (Petsiuk et al. 2018, RISE): replace the most relevant pixels first by a
    blurred copy of the image (no sharp artificial edges) and follow the probability of the target
    class. Returns (N, len(fractions)) probabilities; a faithful map makes them fall fast, so the
    area under the curve is low. ROAD's imputer in pytorch-grad-cam solves a sparse system per image
    and fraction (~0.1 s each on this CPU), too slow for the whole test split; this is batched."""
    from torchvision.transforms.functional import gaussian_blur
    model.eval()
    images = torch.as_tensor(np.asarray(images_uint8))
    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    targets = torch.as_tensor(np.asarray(target_classes), dtype=torch.long)
    curves = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=desc is None, leave=False):
            x = normalize(images[start:start + batch_size], normalization).to(device)
            blurred = gaussian_blur(x, kernel_size=9, sigma=3.0)
            m = maps[start:start + batch_size].flatten(1).to(device)
            rank = m.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = most relevant pixel
            t = targets[start:start + batch_size].to(device)
            rows = []
            for fraction in fractions:
                remove = (rank < round(fraction * m.shape[1])).view_as(x[:, 0]).unsqueeze(1)
                probs = torch.softmax(model(torch.where(remove, blurred, x)), dim=1)
                rows.append(probs.gather(1, t[:, None])[:, 0])
            curves.append(torch.stack(rows, dim=1).cpu())
    return torch.cat(curves).numpy()


def deletion_auc(curves, fractions=DELETION_FRACTIONS):
    """Area under each deletion curve over the removed fraction (0..1); lower = more faithful."""
    return np.trapezoid(curves, x=np.asarray(fractions), axis=1)


def overlay(image_uint8, cam_map, size=DISPLAY_SIZE, strength=0.6):
    """RGB uint8 overlay of a map on the grayscale image, both upsampled to `size` for reading. The
    colour's opacity follows the map (up to `strength` at its peak), so where the map is cold the film
    shows through untouched and the anatomy under the hot spot stays readable."""
    from matplotlib import colormaps
    img = torch.from_numpy(np.array(image_uint8, dtype=np.float32))[None, None] / 255.0  # a copy: inputs may be read-only
    big = torch.nn.functional.interpolate(img, size=(size, size), mode="bicubic", align_corners=False)
    heat = torch.nn.functional.interpolate(torch.as_tensor(cam_map, dtype=torch.float32)[None, None],
                                           size=(size, size), mode="bilinear", align_corners=False)
    film = big[0, 0].clamp(0, 1).numpy()[..., None].repeat(3, axis=2)
    cam = heat[0, 0].clamp(0, 1).numpy()
    alpha = strength * cam[..., None]
    rgb = (1 - alpha) * film + alpha * colormaps["jet"](cam)[..., :3]
    return np.uint8(np.round(255 * rgb))


# Bands of a frontal film, as fractions of its width and height: the middle fifth of the width is
# the mediastinum and heart; the lungs lie either side.
CENTRAL_BAND = (0.4, 0.6)


def coarse_region(cam_map, share=0.8):
    """Where a map puts its evidence, in the patient's terms: 'right lung, lower zone', 'left lung,
    upper zone', 'both lungs, lower zones' or 'central (mediastinum / heart), middle zone'. A frontal
    film shows the patient's right on the image's left. Only the map's peak counts (pixels at or above
    `share` of its maximum): the broad low plateau of an upsampled 4x4 map would otherwise pull every
    answer to the middle. Sides: the peak's mass left of, inside and right of CENTRAL_BAND; both lungs
    when each side holds at least a third of it. Zones: thirds of the height, from the peak's centre."""
    cam = np.asarray(cam_map, dtype=float)
    if not np.isfinite(cam).all() or cam.max() <= 0:
        return "no localised evidence"
    hot = np.where(cam >= share * cam.max(), cam, 0.0)
    rows, cols = np.indices(cam.shape)
    x = (cols + 0.5) / cam.shape[1]
    total = hot.sum()
    image_left = hot[x < CENTRAL_BAND[0]].sum() / total
    image_right = hot[x > CENTRAL_BAND[1]].sum() / total
    cy = (hot * (rows + 0.5)).sum() / total / cam.shape[0]
    zone = "upper" if cy < 1 / 3 else ("middle" if cy < 2 / 3 else "lower")
    if min(image_left, image_right) >= 1 / 3:
        return f"both lungs, {zone} zones"
    if max(image_left, image_right) < 0.5:  # most of the peak lies in the central band
        return f"central (mediastinum / heart), {zone} zone"
    return f"{'right' if image_left > image_right else 'left'} lung, {zone} zone"
