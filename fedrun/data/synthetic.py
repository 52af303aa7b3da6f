"""Embedded, deterministic stand-in for federated EMNIST digits keyed by writer.

Nothing can be downloaded where fedrun runs, so clients are generated on demand: a
client is only a pair of seeds, and a population of a million writers costs nothing
until one is sampled. Each writer has a persistent style drawn from ``style_seed``
(slant, stroke width, size, aspect, position, ink, which variant of 1/3/4/7/9 they
write, a mildly skewed label mix); each example jitters that style. Writers therefore
differ the way EMNIST writers do (non-IID). A writer's train and test sets share
``style_seed`` and use different ``example_seed``s; examples hash both seeds, so
writers that share an ``example_seed`` (say 0 for train) still get independent data.

Pixel convention: background 0.0, ink up to 1.0. TFF's EMNIST is the inverse
(background 1.0, ink 0.0); for the linear models used here that makes no difference.

``generate_examples`` uses only stateless TF ops, so it traces into a tf.function or
TFF tensorflow computation and runs on a remote worker. A client's data must be the
same bits wherever it is built (eagerly, in tf.function, in TFF's worker binary after
TFF's static grappler pass), so the generator avoids kernels that round differently
in TFF's worker binary than in the TensorFlow wheel (exp, sigmoid, image transforms)
and orders its arithmetic so that grappler's regrouping and constant folding change
no bits (scalars first, then per-example, then per-pixel terms).
"""

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from fedrun.data.keys import TEST, TRAIN
from fedrun.data.registry import SourceOptions
from fedrun.data.source import ClientDataSource

IMAGE_SIZE = 28
NUM_CLASSES = 10

_CENTRE = (IMAGE_SIZE - 1) / 2
_GLYPH_W, _GLYPH_H = 12.0, 18.0  # pixel size of the unit box glyphs are drawn in
_FAR = float(IMAGE_SIZE)  # distance-field fill outside the template: never inked
_TEMPLATE_WIDTH = 1.5  # half stroke width of glyph_templates()

# Writer style, uniform in [low, high]: slant (shear), half stroke width (px), scale,
# x/y aspect, shift x, shift y (px), ink.
_STYLE_LOW = np.array([-0.4, 0.8, 0.8, 0.8, -2.0, -2.0, 0.6], np.float32)
_STYLE_HIGH = np.array([0.4, 2.0, 1.15, 1.2, 2.0, 2.0, 1.0], np.float32)
# Per-example jitter half-ranges: tan(rotation / 2), shear, relative scale, shift x,
# shift y (px), half stroke width (px), relative ink.
_JITTER = np.array([0.1, 0.15, 0.08, 1.5, 1.5, 0.3, 0.1], np.float32)
_LABEL_SKEW = 0.4  # std of a writer's label logits
_ALT_PROB = 0.4  # chance that a writer uses the alternative glyph of a digit
_NOISE = 0.04  # std of additive pixel noise
_HIGH_DIGITS = np.array([[-1.0] * 5 + [1.0] * 5], np.float32)  # the direction a label bias moves


def _arc(cx, cy, rx, ry, start, stop, steps=32):
    """Polyline along an ellipse in the unit box; degrees, 90 = top (v grows down)."""
    a = np.radians(np.linspace(start, stop, steps))
    return np.stack([cx + rx * np.cos(a), cy - ry * np.sin(a)], axis=1)


def _line(*points):
    return np.array(points, np.float64)


# digit -> (usual glyph, alternative glyph); a glyph is a list of polylines in the unit
# box (u right, v down). Digits without a common alternative have a single glyph.
_GLYPHS = {
    0: ([_arc(0.5, 0.5, 0.42, 0.5, 0, 360)],),
    1: ([_line((0.5, 0), (0.5, 1))], [_line((0.2, 0.22), (0.5, 0), (0.5, 1)), _line((0.22, 1), (0.78, 1))]),
    2: ([np.concatenate([_arc(0.5, 0.27, 0.42, 0.27, 165, -40), _line((0.05, 1), (0.95, 1))])],),
    3: (
        [_arc(0.5, 0.25, 0.4, 0.25, 150, -90), _arc(0.5, 0.75, 0.45, 0.25, 90, -150)],
        [_line((0.1, 0), (0.9, 0), (0.4, 0.42)), _arc(0.5, 0.71, 0.45, 0.29, 105, -150)],
    ),
    4: (
        [_line((0.62, 0), (0.05, 0.66), (0.95, 0.66)), _line((0.7, 0.3), (0.7, 1))],
        [_line((0.15, 0), (0.1, 0.6), (0.95, 0.6)), _line((0.72, 0), (0.72, 1))],
    ),
    5: ([_line((0.92, 0), (0.15, 0), (0.12, 0.46)), _arc(0.48, 0.7, 0.42, 0.3, 140, -140)],),
    6: ([_arc(0.85, 0.72, 0.75, 0.71, 100, 180), _arc(0.5, 0.72, 0.4, 0.28, 180, -180)],),
    7: (
        [_line((0.05, 0), (0.95, 0), (0.4, 1))],
        [_line((0.05, 0), (0.95, 0), (0.4, 1)), _line((0.42, 0.5), (0.9, 0.5))],
    ),
    8: ([_arc(0.5, 0.25, 0.33, 0.25, -90, 270), _arc(0.5, 0.73, 0.42, 0.27, 90, 450)],),
    9: (
        [_arc(0.5, 0.28, 0.4, 0.28, 0, 360), _line((0.9, 0.28), (0.86, 1))],
        [_arc(0.5, 0.28, 0.4, 0.28, 0, 360), _arc(0.1, 0.28, 0.8, 0.72, 0, -80)],
    ),
}


def _distance_field(polylines):
    """Distance (px) from every pixel centre to the nearest stroke segment."""
    starts, ends = [], []
    for uv in polylines:
        xy = np.stack([_CENTRE + (uv[:, 0] - 0.5) * _GLYPH_W, _CENTRE + (uv[:, 1] - 0.5) * _GLYPH_H], axis=1)
        starts.append(xy[:-1])
        ends.append(xy[1:])
    a, b = np.concatenate(starts), np.concatenate(ends)
    ys, xs = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    p = np.stack([xs.ravel(), ys.ravel()], axis=1)[:, None, :].astype(np.float64)
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    dist = np.linalg.norm(p - a - t[..., None] * ab, axis=-1).min(axis=1)
    return dist.reshape(IMAGE_SIZE, IMAGE_SIZE)


@functools.cache
def _distance_fields():
    """float32 [2, 10, 28, 28]: distance fields of the usual and alternative glyphs."""
    fields = [
        [_distance_field(_GLYPHS[d][min(v, len(_GLYPHS[d]) - 1)]) for d in range(NUM_CLASSES)]
        for v in range(2)
    ]
    return np.asarray(fields, np.float32)


@functools.cache
def glyph_templates() -> np.ndarray:
    """float32 [10, 28, 28]: a clean, centred prototype for each digit 0-9 (cached)."""
    dist = _distance_fields()[0]
    templates = np.clip(_TEMPLATE_WIDTH + 0.5 - dist, 0, 1).astype(np.float32)
    templates.setflags(write=False)  # shared by every caller through the cache
    return templates


@functools.cache
def _cell_corners():
    """float32 [20 * 29 * 29, 4]: corners of every cell of the _FAR-padded fields.

    Bilinear sampling then fetches all four neighbours with a single gather.
    """
    padded = np.pad(
        _distance_fields().reshape(-1, IMAGE_SIZE, IMAGE_SIZE), [(0, 0), (1, 1), (1, 1)], constant_values=_FAR
    )
    corners = [padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]]
    return np.stack(corners, axis=-1).reshape(-1, 4)


def _seed(key, stream):
    """Seed of random stream `stream` of `key`; every call site uses its own stream."""
    return tf.stack([key, tf.constant(stream, tf.int64)])


def _bilinear(glyph, x, y):
    """Distance field of `glyph` [n] at x, y [n, 28, 28] (pixels from the centre).

    Hand-written from +, *, floor and gather, because ImageProjectiveTransformV3 rounds
    differently in TFF's worker binary (see the module docstring).
    """
    cells = IMAGE_SIZE + 1  # cells between the pixels of the _FAR-padded fields
    x = tf.clip_by_value(x + (_CENTRE + 1), 0, cells)
    y = tf.clip_by_value(y + (_CENTRE + 1), 0, cells)
    x0 = tf.minimum(tf.floor(x), cells - 1)
    y0 = tf.minimum(tf.floor(y), cells - 1)
    fx, fy = x - x0, y - y0
    cell = (glyph[:, None, None] * cells + tf.cast(y0, tf.int32)) * cells + tf.cast(x0, tf.int32)
    top_left, top_right, bottom_left, bottom_right = tf.unstack(
        tf.gather(tf.constant(_cell_corners()), cell), axis=-1
    )
    top = top_left * (1 - fx) + top_right * fx
    bottom = bottom_left * (1 - fx) + bottom_right * fx
    return top * (1 - fy) + bottom * fy


def generate_examples(num_examples, style_seed, example_seed, label_bias=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Images float32 [n, 28, 28] in [0, 1] (background 0) and labels int32 [n].

    Args are scalar tensors or Python ints: `num_examples` int32, `style_seed` and
    `example_seed` int64. The writer's style depends on `style_seed` only, the
    examples (labels, jitter, noise) on both. Stateless ops only, vectorised over
    examples, so it is identical eagerly and inside tf.function / TFF computations.
    `label_bias` (a float32 scalar, or None for none at all) shifts the writer's label mix
    towards digits 5-9 (positive) or 0-4 (negative).
    """
    n = tf.cast(num_examples, tf.int32)
    style_seed = tf.cast(style_seed, tf.int64)
    example_key = tf.random.stateless_uniform(
        [], tf.stack([style_seed, tf.cast(example_seed, tf.int64)]), dtype=tf.int64, minval=None, maxval=None
    )

    u = tf.random.stateless_uniform([len(_STYLE_LOW)], _seed(style_seed, 0))
    slant, width, scale, aspect, shift_x, shift_y, ink = tf.unstack(
        _STYLE_LOW + (_STYLE_HIGH - _STYLE_LOW) * u
    )
    label_logits = _LABEL_SKEW * tf.random.stateless_normal([1, NUM_CLASSES], _seed(style_seed, 1))
    if label_bias is not None:
        label_logits = label_logits + tf.cast(label_bias, tf.float32) * _HIGH_DIGITS
    alternative = tf.cast(
        tf.random.stateless_uniform([NUM_CLASSES], _seed(style_seed, 2)) < _ALT_PROB, tf.int32
    )

    labels = tf.random.stateless_categorical(label_logits, n, _seed(example_key, 3), dtype=tf.int32)[0]
    jitter = _JITTER * tf.random.stateless_uniform(
        tf.stack([n, len(_JITTER)]), _seed(example_key, 4), minval=-1, maxval=1
    )
    # Per-example parameters shaped [n, 1, 1] to broadcast over pixels.
    half_turn, d_shear, d_scale, d_x, d_y, d_width, d_ink = tf.unstack(jitter[:, :, None, None], axis=1)

    # Output pixel p (from the centre) samples the template at M (p - shift), M the
    # inverse of rotate . shear(slant) . scale(sx, sy). Keep the order of terms (see
    # the module docstring); tests/unit/test_synthetic.py checks it.
    shear = slant + d_shear
    sy = scale * (1 + d_scale)
    sx = scale * aspect * (1 + d_scale)
    t2 = half_turn * half_turn  # cos and sin of the rotation, rationally
    cos, sin = (1 - t2) / (1 + t2), 2 * half_turn / (1 + t2)
    m00, m01 = (cos - shear * sin) / sx, (sin + shear * cos) / sx
    m10, m11 = -sin / sy, cos / sy
    # Shifts in 1/256 px make p - shift exact, whichever way grappler regroups it.
    grid_y, grid_x = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE].astype(np.float32) - _CENTRE
    dx = grid_x - tf.round((shift_x + d_x) * 256) / 256
    dy = grid_y - tf.round((shift_y + d_y) * 256) / 256
    glyph = tf.gather(alternative, labels) * NUM_CLASSES + labels
    dist = _bilinear(glyph, m00 * dx + m01 * dy, m10 * dx + m11 * dy)

    # Ink coverage ramps over the pixel around the stroke's edge; warped distances are
    # in template pixels, `sy` converts them to output pixels.
    coverage = tf.clip_by_value(width + 0.5 + d_width - dist * sy, 0, 1)
    images = ink * (1 + d_ink) * coverage
    noise = _NOISE * tf.random.stateless_normal(tf.shape(images), _seed(example_key, 5))
    return tf.clip_by_value(images + noise, 0.0, 1.0), labels


class SyntheticDigits(ClientDataSource):
    """The embedded default: `population` training writers plus `heldout` writers that never
    train, each with a train and a test split. A writer is (n, style seed) drawn from
    (data_seed, client index) in O(1), so nothing is stored per client.

    `label_bias(client)`, if given, shifts each writer's digit mix (`--speed-data-skew`: slow
    devices' writers favour 5-9), so the clients a deadline drops hold different data."""

    element_spec = (tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE], tf.float32), tf.TensorSpec([], tf.int32))
    num_classes = NUM_CLASSES

    def __init__(
        self,
        population: int,
        heldout: int = 0,
        data_seed: int = 0,
        median_examples: int = 100,
        test_fraction: float = 0.2,
        label_bias: Callable[[int], float] | None = None,
    ):
        self._population = population
        self._label_bias = label_bias
        self.heldout = heldout
        self.data_seed = data_seed
        self.median_examples = median_examples
        self.test_fraction = test_fraction

    @property
    def population(self) -> int:
        return self._population

    def heldout_clients(self) -> np.ndarray:
        return np.arange(self._population, self._population + self.heldout)

    def _writer(self, client: int) -> tuple[int, int]:
        if not 0 <= client < self._population + self.heldout:
            raise IndexError(f"client {client} is outside this population")
        rng = np.random.default_rng([self.data_seed, client])
        n = int(np.clip(round(self.median_examples * rng.lognormal(0.0, 0.5)), 16, 8 * self.median_examples))
        return n, int(rng.integers(0, 2**62))

    def num_examples(self, client: int, split: str) -> int:
        n, _ = self._writer(client)
        return n if split == TRAIN else max(4, round(self.test_fraction * n))

    def client_key(self, client: int, split: str) -> str:
        _, style_seed = self._writer(client)
        key = f"{self.num_examples(client, split)}:{style_seed}:{_EXAMPLE_SEEDS[split]}"
        return key if self._label_bias is None else f"{key}:{self._label_bias(client)!r}"

    def client_examples(self, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        fields = tf.strings.split(key, ":")
        if self._label_bias is None:
            n, style_seed, example_seed = tf.unstack(tf.strings.to_number(fields, tf.int64), num=3)
            return generate_examples(n, style_seed, example_seed)
        n, style_seed, example_seed = tf.unstack(tf.strings.to_number(fields[:3], tf.int64), num=3)
        bias = tf.strings.to_number(fields[3], tf.float32)
        return generate_examples(n, style_seed, example_seed, bias)


_EXAMPLE_SEEDS = {TRAIN: 0, TEST: 1}


def open_synthetic(options: SourceOptions) -> SyntheticDigits:
    bias = None
    if options.speed_data_skew:
        from fedrun.system.models import speed_latent

        def bias(client: int) -> float:  # the lognormal model's compute latent: slower -> higher digits
            return options.speed_data_skew * speed_latent(options.seed, client, "compute")

    heldout = options.heldout if options.heldout >= 0 else 32
    return SyntheticDigits(population=options.population, heldout=heldout, label_bias=bias)
