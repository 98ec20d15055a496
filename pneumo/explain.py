"""Grad-CAM maps (pytorch-grad-cam), their faithfulness (deletion test) and a readable overlay gallery."""
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

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
                 layer=DEFAULT_LAYER, batch_size=64):
    """Grad-CAM maps (N, H, W) in [0, 1] at input resolution, and the target class of each image
    (the predicted class unless given)."""
    model.eval()
    images = torch.as_tensor(np.asarray(images_uint8))
    maps, targets_used = [], []
    with GradCAM(model=model, target_layers=[model.stage_outputs()[layer]]) as cam:
        for start in range(0, len(images), batch_size):
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
                    fractions=DELETION_FRACTIONS, batch_size=256):
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
        for start in range(0, len(images), batch_size):
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


def overlay(image_uint8, cam_map, size=DISPLAY_SIZE):
    """RGB uint8 overlay of a map on the grayscale image, both upsampled to `size` for reading."""
    img = torch.as_tensor(image_uint8, dtype=torch.float32)[None, None] / 255.0
    big = torch.nn.functional.interpolate(img, size=(size, size), mode="bicubic", align_corners=False)
    heat = torch.nn.functional.interpolate(torch.as_tensor(cam_map, dtype=torch.float32)[None, None],
                                           size=(size, size), mode="bilinear", align_corners=False)
    rgb = big[0, 0].clamp(0, 1).numpy()[..., None].repeat(3, axis=2)
    return show_cam_on_image(rgb, heat[0, 0].clamp(0, 1).numpy(), use_rgb=True, image_weight=0.6)


def coarse_region(cam_map, share=0.5):
    """Where a map puts its evidence, in the patient's terms: '<right|left> <upper|lower> zone'
    (or 'bilateral ...' when both lungs weigh alike). A frontal film shows the patient's right on
    the image's left. Uses the centre of mass of the pixels above `share` of the maximum."""
    cam = np.asarray(cam_map, dtype=float)
    hot = np.where(cam >= share * cam.max(), cam, 0.0)
    if hot.sum() <= 0:
        return "no localised evidence"
    rows, cols = np.indices(cam.shape)
    cy, cx = (hot * rows).sum() / hot.sum() / cam.shape[0], (hot * cols).sum() / hot.sum() / cam.shape[1]
    left_image, right_image = hot[:, : cam.shape[1] // 2].sum(), hot[:, cam.shape[1] // 2:].sum()
    balance = min(left_image, right_image) / max(left_image, right_image)
    side = "bilateral" if balance > 0.6 else ("right" if cx < 0.5 else "left")
    zone = "upper" if cy < 0.5 else "lower"
    return f"{side} {zone} zone" if side == "bilateral" else f"{side} lung, {zone} zone"
