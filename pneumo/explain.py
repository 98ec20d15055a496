"""Explanation maps of the classifier (pytorch-grad-cam's CAM family at a stage, Captum's Integrated
Gradients and Occlusion at input resolution), the deletion test, and a readable overlay gallery."""
import numpy as np
import torch
from tqdm.auto import tqdm

from .data import normalize

# Stage 4 (4x4 at 28 px) rather than stage 3 (7x7): on val its maps are the more faithful by the
# deletion test (reports/task1_gradcam_faithfulness_val.json, task1/gradcam.py --faithfulness
# --split val), it is the most class-specific stage, and a 4x4 grid still resolves the left/right,
# upper/lower lung zones that the reports speak of. Stage 3 stays available (--layer layer3).
DEFAULT_LAYER = "layer4"
LAYERS = ("layer3", "layer4")
# pytorch-grad-cam's classes by name (imported on first use: the words below are read by pages and prompts)
CAM_METHODS = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM",
               "scorecam": "ScoreCAM", "ablationcam": "AblationCAM", "eigencam": "EigenCAM"}
INPUT_METHODS = ("integrated_gradients", "occlusion")  # Captum; the layer does not apply
METHODS = (*CAM_METHODS, *INPUT_METHODS)
# The shipped method, chosen on val by benchmarks/explanations.py's rule (reports/task1_explanations.md).
DEFAULT_METHOD = "integrated_gradients"
METHOD_NAMES = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM",
                "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM", "eigencam": "EigenCAM",
                "integrated_gradients": "Integrated Gradients", "occlusion": "Occlusion"}
SHIPPED_NAME = METHOD_NAMES[DEFAULT_METHOD]  # what pages, reports and prompts call the shipped map
DISPLAY_SIZE = 224


def shipped_words(method=DEFAULT_METHOD, layer=DEFAULT_LAYER) -> str:
    """'Grad-CAM layer4', or an input-resolution method's name alone (the layer does not apply)."""
    return METHOD_NAMES[method] if method in INPUT_METHODS else f"{METHOD_NAMES[method]} {layer}"
# Denser where it matters: most of the probability change happens in the first third removed.
DELETION_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def gradcam_maps(model, images_uint8, normalization, device, target_classes=None,
                 layer=DEFAULT_LAYER, batch_size=64, desc=None, method=DEFAULT_METHOD):
    """Explanation maps (N, H, W) in [0, 1] at input resolution, and the target class of each image
    (the predicted class unless given), by `method` (METHODS; a CAM method at stage `layer`).
    `desc` shows a progress bar over the batches."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
    model.eval()
    images = torch.as_tensor(np.asarray(images_uint8))
    maps, targets_used = [], []
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cam = None
    if method in CAM_METHODS:
        cam = getattr(pytorch_grad_cam, CAM_METHODS[method])(model=model, target_layers=[model.stage_outputs()[layer]])
    if cam is not None and hasattr(cam, "batch_size"):
        cam.batch_size = 256  # Score-CAM / Ablation-CAM: masked copies per forward pass
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=desc is None, leave=False):
            x = normalize(images[start:start + batch_size], normalization).to(device)
            if target_classes is None:
                with torch.no_grad():
                    classes = model(x).argmax(dim=1).tolist()
            else:
                classes = [int(c) for c in target_classes[start:start + batch_size]]
            if cam is None:
                maps.append(input_attribution(model, x, classes, method))
            else:
                maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
            targets_used.extend(classes)
    finally:
        if cam is not None:
            cam.activations_and_grads.release()
    return np.concatenate(maps).astype(np.float32), np.asarray(targets_used)


def absent(x):
    """The 'evidence removed' version of a normalised batch: a blurred copy (no sharp artificial edges).
    The deletion and insertion tests and the Captum methods' baseline use it."""
    from torchvision.transforms.functional import gaussian_blur
    return gaussian_blur(x, kernel_size=9, sigma=3.0)


def input_attribution(model, x, classes, method):
    """Captum's Integrated Gradients (32 steps from the blurred copy) or Occlusion (4x4 patches, stride 2,
    replaced by the blurred copy) for `classes`: the positive part (evidence for the class), scaled to [0, 1]."""
    from captum.attr import IntegratedGradients, Occlusion
    target = torch.as_tensor(classes, device=x.device)
    if method == "integrated_gradients":
        attr = IntegratedGradients(model).attribute(x, baselines=absent(x), target=target, n_steps=32,
                                                    internal_batch_size=512)
    else:
        attr = Occlusion(model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                          baselines=absent(x), target=target, perturbations_per_eval=16)
    a = attr[:, 0].detach().clamp(min=0)
    return (a / a.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]).cpu().numpy()


def deletion_curves(model, images_uint8, maps, target_classes, normalization, device,
                    fractions=DELETION_FRACTIONS, batch_size=256, desc=None, insert=False):
    """Deletion test (Petsiuk et al. 2018, RISE): replace the most relevant pixels first by a
    blurred copy of the image (no sharp artificial edges) and follow the probability of the target
    class. Returns (N, len(fractions)) probabilities; a faithful map makes them fall fast, so the
    area under the curve is low. With `insert`, the insertion test: start from the blurred copy and put
    the most relevant pixels back first; a faithful map makes the probability rise fast (high area).
    Batched; pytorch-grad-cam's ROAD (pneumo.faithfulness.road_curves) is the slower, debiased check."""
    model.eval()
    images = torch.as_tensor(np.asarray(images_uint8))
    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    targets = torch.as_tensor(np.asarray(target_classes), dtype=torch.long)
    curves = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=desc is None, leave=False):
            x = normalize(images[start:start + batch_size], normalization).to(device)
            blurred = absent(x)
            m = maps[start:start + batch_size].flatten(1).to(device)
            rank = m.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # 0 = most relevant pixel
            t = targets[start:start + batch_size].to(device)
            rows = []
            for fraction in fractions:
                chosen = (rank < round(fraction * m.shape[1])).view_as(x[:, 0]).unsqueeze(1)
                mixed = torch.where(chosen, x, blurred) if insert else torch.where(chosen, blurred, x)
                rows.append(torch.softmax(model(mixed), dim=1).gather(1, t[:, None])[:, 0])
            curves.append(torch.stack(rows, dim=1).cpu())
    return torch.cat(curves).numpy()


def deletion_auc(curves, fractions=DELETION_FRACTIONS):
    """Area under each deletion (insertion) curve over the removed (inserted) fraction 0..1; lower
    (higher) = more faithful."""
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
