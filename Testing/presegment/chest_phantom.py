"""A contrast-enhanced chest phantom with known truth, for what the sample data lack: a heart, the aorta lying on
the spine, a pulmonary trunk, a superior vena cava full of undiluted contrast, sternum and ribs near the heart,
arms, calcified plaque, and bone with a cortex and textured marrow.

Arrays are (z, y, x) with +z superior, +y posterior, +x the patient's left (ITK LPS), in mm from a corner. The
noiseless HU map is blurred by the scanner's point spread (Gaussian, 0.6 mm), then white noise is added: thin
slices (default 1.5 x 0.8 x 0.8 mm, noise 25 HU), a realistic arterial CT angiogram or portal-venous chest CT.
Marrow has a trabecular texture (smooth noise of 45 HU, 1 mm correlation) that blood has not.

HU, arterial / portal-venous (native: blood 45, myocardium 40):

- left heart and aorta 380 / 170; right heart and pulmonary arteries 300 / 165; an inflow jet in the right
  atrium 650 / 170; superior vena cava 1100 / 165; myocardium 120 / 100;
- vertebral marrow 230 by default (dense, young bone; ``marrow`` sets it), sternal marrow 200, rib marrow 160;
- cortex 900 (vertebrae, sternum), 800 (ribs), 1500 (humeri, 3 mm thick around fatty marrow); discs 90;
  plaque on the aortic wall 900-1300, coronary calcium on the heart's surface 700-1100 (0.1-0.3 ml).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage as ndi

ARTERIAL = {"left": 380, "right": 300, "jet": 650, "svc": 1100, "myocardium": 120}
VENOUS = {"left": 170, "right": 165, "jet": 170, "svc": 165, "myocardium": 100}
NATIVE = {"left": 45, "right": 45, "jet": 45, "svc": 45, "myocardium": 40}


def _tube(z, y, x, start, end, radius):
    """Points within ``radius`` of the segment ``start``-``end`` (z, y, x in mm)."""
    p0, p1 = np.asarray(start, float), np.asarray(end, float)
    axis = p1 - p0
    length2 = float(axis @ axis)
    t = np.clip(((z - p0[0]) * axis[0] + (y - p0[1]) * axis[1] + (x - p0[2]) * axis[2]) / length2, 0, 1)
    d2 = (z - p0[0] - t * axis[0]) ** 2 + (y - p0[1] - t * axis[1]) ** 2 + (x - p0[2] - t * axis[2]) ** 2
    return d2 <= radius**2


def _shell(inside_outer, inside_inner):
    return inside_outer & ~inside_inner


@functools.lru_cache(maxsize=4)
def chest(phase="arterial", spacing=(1.5, 0.8, 0.8), noise=25.0, seed=0, marrow=230.0, extent=(170.0, 260.0, 380.0)):
    """(hu int16, truth dict of masks, spacing); ``extent`` (z, y, x) in mm: more adds chest wall, spine and air
    beyond the heart (a whole chest's field of view, for the benchmark). Truth: blood (lumen and chambers), plaque,
    coronary_calcium, bone (vertebrae with their arches, ribs, sternum, humeri), myocardium, aorta, heart,
    pulmonary, svc, vertebrae, ribs, discs, canal."""
    levels = {"arterial": ARTERIAL, "portal-venous": VENOUS, "native": NATIVE}[phase]
    rng = np.random.default_rng(seed)
    shape = tuple(int(round(e / s)) for e, s in zip(extent, spacing, strict=True))
    z, y, x = (np.arange(n, dtype=np.float32)[tuple(slice(None) if a == i else None for a in range(3))] * s
               for i, (n, s) in enumerate(zip(shape, spacing, strict=True)))  # fmt: skip
    cy, cx = 130.0, 190.0
    ring = ((y - cy) / 105.0) ** 2 + ((x - cx) / 150.0) ** 2
    hu = np.full(shape, -1000.0, np.float32)
    torso = np.broadcast_to(ring <= 1.0, shape)
    hu[torso] = 40.0  # skin
    hu[np.broadcast_to(ring <= 0.96, shape)] = -100.0  # subcutaneous fat
    hu[np.broadcast_to(ring <= 0.85, shape)] = 50.0  # chest wall muscle
    inner = np.broadcast_to(((y - cy) / 88.0) ** 2 + ((x - cx) / 128.0) ** 2 <= 1.0, shape)
    hu[inner] = -10.0  # mediastinal fat by default
    lungs = {}
    for name, side in (("left", 1), ("right", -1)):
        lungs[name] = inner & (((y - 125.0) / 70.0) ** 2 + ((x - cx - side * 68.0) / 52.0) ** 2 <= 1.0)
        hu[lungs[name]] = -860.0
    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), [1.0 / s for s in spacing])
    texture *= 45.0 / max(float(texture.std()), 1e-6)

    # spine: vertebral bodies (24 mm) and discs (8 mm), arch around the canal, spinous process
    vy, vx = 178.0, cx
    column = (y - vy) ** 2 + (x - vx) ** 2
    body_level = np.broadcast_to(((z - 4.0) % 32.0) < 24.0, shape)
    bodies = np.broadcast_to(column <= 18.0**2, shape) & body_level
    discs = np.broadcast_to(column <= 17.0**2, shape) & ~body_level
    canal = (y - 206.0) ** 2 + (x - vx) ** 2
    arch = np.broadcast_to((canal <= 14.0**2) & (canal > 8.0**2) & (y > 196.0), shape) & body_level
    spinous = np.broadcast_to((np.abs(x - vx) <= 3.5) & (y > 215.0) & (y < 245.0), shape) & body_level
    marrow_v = np.broadcast_to(column <= 16.8**2, shape) & np.broadcast_to(((z - 5.2) % 32.0) < 21.6, shape)
    hu[discs] = 90.0
    vertebrae = bodies | arch | spinous
    hu[vertebrae] = 900.0
    hu[marrow_v] = marrow + texture[marrow_v]
    hu[np.broadcast_to(canal <= 8.0**2, shape)] = 15.0

    # sternum: a plate 12 mm thick, 40 mm wide, behind the anterior chest wall
    sternum_out = np.broadcast_to((np.abs(x - cx) <= 20.0) & (y >= 36.0) & (y <= 48.0), shape)
    sternum_in = np.broadcast_to((np.abs(x - cx) <= 19.0) & (y >= 37.0) & (y <= 47.0), shape)
    hu[sternum_out] = 900.0
    hu[sternum_in] = 200.0 + texture[sternum_in]

    # ribs: pairs every 30 mm, from the spine round to 35 mm beside the sternum, sloping 30 mm down to the front
    ribs = np.zeros(shape, bool)
    angle = np.arctan2(y - cy, x - cx)  # 0: left, pi/2: posterior
    reach = np.broadcast_to(np.abs(np.abs(angle) - np.pi / 2) <= np.pi / 2 - 0.3, shape)  # not at the sternum
    radial = np.sqrt(((y - cy) / 92.0) ** 2 + ((x - cx) / 132.0) ** 2)
    posterior = (np.sin(angle) + 1) / 2  # 1 at the back, 0 at the front
    for level in np.arange(15.0, 170.0, 30.0):
        centre_z = level - 30.0 * (1 - posterior)
        d_in = (radial - 1.0) * 100.0  # about mm across the chest wall
        tube = (d_in / 6.0) ** 2 + ((z - centre_z) / 5.0) ** 2
        rib = reach & (tube <= 1.0)
        hu[rib] = 800.0
        core = reach & (tube <= 0.55)
        hu[core] = 160.0 + texture[core]
        ribs |= rib

    # heart: myocardium shell around chambers, split by the septum; the ascending aorta, arch and descending aorta
    hz, hy, hx = 60.0, 100.0, 210.0
    heart = ((z - hz) / 42.0) ** 2 + ((y - hy) / 46.0) ** 2 + ((x - hx) / 62.0) ** 2 <= 1.0
    chambers = ((z - hz) / 34.0) ** 2 + ((y - hy) / 37.0) ** 2 + ((x - hx) / 53.0) ** 2 <= 1.0
    septum = (x - hx) - 0.5 * (y - hy)
    hu[heart] = levels["myocardium"]
    left_heart = chambers & (septum > 5.0)
    right_heart = chambers & (septum < -5.0)
    hu[left_heart] = levels["left"]
    hu[right_heart] = levels["right"]
    jet = ((z - 75.0) ** 2 + (y - 105.0) ** 2 + (x - 168.0) ** 2) <= 9.0**2
    jet &= right_heart
    hu[jet] = levels["jet"]
    aorta = np.zeros(shape, bool)
    wall = np.zeros(shape, bool)
    ay, ax = 165.0, 218.0  # descending: the wall touches the vertebral body's cortex
    for radius, target in ((13.5, wall), (12.0, aorta)):
        target |= np.broadcast_to((y - ay) ** 2 + (x - ax) ** 2 <= radius**2, shape) & (z <= 128.0)
        target |= _tube(z, y, x, (80.0, 95.0, 215.0), (128.0, 95.0, 215.0), radius + 2.0)
        rho = np.sqrt((y - 130.0) ** 2 + (z - 128.0) ** 2)
        target |= ((rho - 35.0) ** 2 + (x - 216.0) ** 2 <= (radius + 1.0) ** 2) & (z > 128.0)
    hu[wall & ~aorta & ~heart] = 45.0
    hu[aorta] = levels["left"]
    pulmonary = _tube(z, y, x, (70.0, 72.0, 195.0), (112.0, 118.0, 222.0), 12.0)
    pulmonary |= _tube(z, y, x, (112.0, 118.0, 222.0), (112.0, 140.0, 285.0), 9.0)
    pulmonary |= _tube(z, y, x, (112.0, 118.0, 222.0), (112.0, 140.0, 105.0), 9.0)
    pulmonary &= ~aorta
    hu[pulmonary] = levels["right"]
    svc = _tube(z, y, x, (85.0, 100.0, 160.0), (170.0, 100.0, 160.0), 10.0) & ~aorta
    hu[svc] = levels["svc"]
    blood = aorta | (left_heart | right_heart) | pulmonary | svc

    # plaque: calcified spots on the aorta's wall, some where it lies on the spine
    plaque, coronary = np.zeros(shape, bool), np.zeros(shape, bool)
    for _ in range(12):
        zc = rng.uniform(10.0, 120.0)
        theta = rng.uniform(0, 2 * np.pi) if rng.random() < 0.6 else rng.uniform(2.0, 3.2)  # some towards the spine
        yc, xc = ay + 12.5 * np.sin(theta), ax + 12.5 * np.cos(theta)
        spot = ((z - zc) ** 2 + (y - yc) ** 2 + (x - xc) ** 2) <= rng.uniform(1.5, 2.5) ** 2
        hu[spot] = rng.uniform(900.0, 1300.0)
        plaque |= spot

    # coronary calcium: spots on the heart's surface, in the epicardial fat over the myocardium
    for _ in range(4):
        theta, phi = rng.uniform(0, 2 * np.pi), rng.uniform(-0.6, 0.6)
        zc, yc, xc = (
            hz + 44.0 * np.sin(phi),
            hy + 48.0 * np.cos(phi) * np.sin(theta),
            hx + 64.0 * np.cos(phi) * np.cos(theta),
        )
        spot = ((z - zc) ** 2 + (y - yc) ** 2 + (x - xc) ** 2) <= rng.uniform(3.0, 4.0) ** 2  # 0.1-0.3 ml
        hu[spot] = rng.uniform(700.0, 1100.0)
        coronary |= spot

    # arms: humeri (cortex 3 mm at 1500 HU around fatty marrow) beside the chest
    humeri = np.zeros(shape, bool)
    for side in (-1, 1):
        ux = cx + side * 172.0
        arm = np.broadcast_to(((y - 120.0) / 42.0) ** 2 + ((x - ux) / 24.0) ** 2 <= 1.0, shape)
        hu[arm] = 50.0
        bone = np.broadcast_to((y - 120.0) ** 2 + (x - ux) ** 2 <= 11.0**2, shape)
        hu[bone] = 1500.0
        hu[np.broadcast_to((y - 120.0) ** 2 + (x - ux) ** 2 <= 8.0**2, shape)] = -40.0
        humeri |= bone
    hu = ndi.gaussian_filter(hu, [0.6 / s for s in spacing])
    hu += rng.normal(0.0, noise, shape).astype(np.float32)
    truth = {
        "blood": blood & ~plaque,
        "plaque": plaque,
        "coronary_calcium": coronary,
        "bone": vertebrae | ribs | (sternum_out) | humeri,
        "vertebrae": vertebrae,
        "ribs": ribs,
        "myocardium": heart & ~chambers,
        "aorta": aorta & ~plaque,
        "heart": (left_heart | right_heart),
        "pulmonary": pulmonary,
        "svc": svc,
        "discs": discs,
        "canal": np.broadcast_to(canal <= 8.0**2, shape) & body_level,  # within the arches
    }
    truth = {k: np.broadcast_to(v, shape).copy() for k, v in truth.items()}
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), truth, tuple(spacing)


def as_image(hu, spacing):
    """The phantom as a SimpleITK image in LPS (identity direction)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(hu)
    image.SetSpacing([float(s) for s in spacing[::-1]])
    return image
