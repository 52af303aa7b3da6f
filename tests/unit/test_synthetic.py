"""The embedded synthetic digits: deterministic everywhere, non-IID by writer, learnable."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.grappler import tf_optimizer

from fedrun.data.synthetic import IMAGE_SIZE, NUM_CLASSES, generate_examples, glyph_templates

WRITERS = range(10)


def examples(n, writer, example_seed=0):
    images, labels = generate_examples(n, writer, example_seed)
    return images.numpy(), labels.numpy()


def style_stats(images):
    """Per image [slant, ink mass, centroid x, centroid y] from image moments."""
    ys, xs = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    mass = images.sum((1, 2))
    cx = (images * xs).sum((1, 2)) / mass
    cy = (images * ys).sum((1, 2)) / mass
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    slant = -(images * dx * dy).sum((1, 2)) / (images * dy * dy).sum((1, 2))  # > 0 leans right
    return np.stack([slant, mass, cx, cy], axis=1)


@pytest.fixture(scope="module")
def writer_stats():
    return [style_stats(examples(100, w)[0]) for w in WRITERS]


def f_ratio(groups):
    """One-way ANOVA F: variance between group means over variance within groups."""
    grand = np.concatenate(groups).mean()
    between = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / (len(groups) - 1)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (sum(map(len, groups)) - len(groups))
    return between / within


def test_shapes_dtypes_and_ranges():
    images, labels = generate_examples(37, 5, 1)
    assert images.shape == (37, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == tf.float32
    assert labels.shape == (37,) and labels.dtype == tf.int32
    images, labels = images.numpy(), labels.numpy()
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.median(images) < 0.05  # background is 0 ...
    assert (images.max((1, 2)) > 0.3).all()  # ... and every image has ink
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES
    # Sizes arrive as int64 from tf.strings.to_number; empty clients are allowed.
    assert generate_examples(tf.constant(3, tf.int64), 5, 1)[0].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert generate_examples(0, 5, 1)[1].shape == (0,)


def test_all_classes_appear_over_a_few_writers():
    labels = np.concatenate([examples(100, w)[1] for w in range(3)])
    assert set(labels.tolist()) == set(range(NUM_CLASSES))
    assert np.bincount(labels).min() > 10


def test_glyph_templates_are_distinct_cached_prototypes_of_the_examples():
    templates = glyph_templates()
    assert templates.shape == (NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE) and templates.dtype == np.float32
    assert templates.min() >= 0 and templates.max() == 1
    assert glyph_templates() is templates
    with pytest.raises(ValueError):
        templates[0, 0, 0] = 1.0  # the cached array is shared, so it is read-only
    flat = templates.reshape(NUM_CLASSES, -1)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    similarity = unit @ unit.T
    assert similarity[~np.eye(NUM_CLASSES, dtype=bool)].max() < 0.95
    # Nearest template names most generated digits (chance is 0.1).
    images, labels = zip(*(examples(100, w) for w in range(5)))
    images = np.concatenate(images).reshape(-1, IMAGE_SIZE * IMAGE_SIZE)
    assert ((images @ unit.T).argmax(1) == np.concatenate(labels)).mean() > 0.4


def test_same_seeds_give_same_bits_eagerly_and_in_tf_function():
    first, again = examples(64, 123, 9), examples(64, 123, 9)
    traced = tf.function(
        generate_examples,
        input_signature=[
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.int64),
        ],
    )
    from_tensors = traced(tf.constant(64), tf.constant(123, tf.int64), tf.constant(9, tf.int64))
    from_constants = tf.function(lambda: generate_examples(64, 123, 9))()  # grappler folds these
    for a, b, c, d in zip(first, again, from_tensors, from_constants):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c.numpy())
        np.testing.assert_array_equal(a, d.numpy())
    stateful = [
        op.type for op in traced.get_concrete_function().graph.get_operations() if op.op_def.is_stateful
    ]
    assert not stateful  # stateless only: no tf.random.uniform, no py_function


def after_tff_static_grappler(args, constant):
    """Runs generate_examples as TFF's native backend does: traced into a graph (args[i] baked in
    where constant[i], else fed), rewritten by grappler with TFF's AGGRESSIVE settings
    (tff.backends.native.desugar_and_transform_to_native), then run with runtime grappler off,
    as TFF's worker binary does."""
    graph = tf.Graph()
    with graph.as_default():
        inputs = {
            tf.compat.v1.placeholder(dtype, []): arg
            for arg, dtype, baked in zip(args, (tf.int32, tf.int64, tf.int64), constant)
            if not baked
        }
        fed = iter(inputs)
        outputs = [
            tf.identity(t)
            for t in generate_examples(*(arg if baked else next(fed) for arg, baked in zip(args, constant)))
        ]
    meta_graph = tf.compat.v1.MetaGraphDef()
    meta_graph.graph_def.CopyFrom(graph.as_graph_def())
    signature = meta_graph.signature_def["FunctionSpec"]
    for kind, tensors in (("inputs", list(inputs)), ("outputs", outputs)):
        for i, tensor in enumerate(tensors):
            info = getattr(signature, kind)[f"{kind}_{i}"]
            info.name, info.dtype = tensor.name, tensor.dtype.as_datatype_enum
            info.tensor_shape.CopyFrom(tensor.shape.as_proto())
    static = tf.compat.v1.ConfigProto()
    rewrites = static.graph_options.rewrite_options
    for option in (
        "memory_optimization",
        "constant_folding",
        "arithmetic_optimization",
        "loop_optimization",
        "function_optimization",
    ):
        setattr(rewrites, option, rewrites.AGGRESSIVE)
    optimized = tf_optimizer.OptimizeGraph(static, meta_graph)
    assert optimized != meta_graph.graph_def  # the rewrites happened
    runtime = tf.compat.v1.ConfigProto()
    runtime.graph_options.rewrite_options.disable_meta_optimizer = True
    runtime.graph_options.optimizer_options.opt_level = tf.compat.v1.OptimizerOptions.L0
    with tf.Graph().as_default() as rewritten:
        tf.graph_util.import_graph_def(optimized, name="")
    with tf.compat.v1.Session(graph=rewritten, config=runtime) as session:
        return session.run([t.name for t in outputs], {t.name: arg for t, arg in inputs.items()})


@pytest.mark.parametrize(
    "constant",
    [
        (False, False, False),
        (True, True, True),
        (True, False, False),
        (False, True, True),
        (False, True, False),
        (False, False, True),
    ],
)
def test_same_bits_after_tffs_graph_rewrites(constant):
    # Grappler regroups sums and products and folds constants; written carelessly, the data
    # built on a TFF worker would differ from the data built eagerly by ~1e-6.
    for args in [(50, 3, 4), (7, 12345678901, -2)]:
        for a, b in zip(examples(*args), after_tff_static_grappler(args, constant)):
            np.testing.assert_array_equal(a, b)


def test_a_new_example_seed_gives_new_examples_in_the_same_style():
    for writer in range(4):
        (train, train_labels), (test, test_labels) = examples(200, writer, 0), examples(200, writer, 1)
        assert (train_labels != test_labels).mean() > 0.5
        assert np.abs(train - test).mean() > 0.05
        a, b = style_stats(train).mean(0), style_stats(test).mean(0)
        assert abs(a[0] - b[0]) < 0.03  # slant
        assert abs(a[1] - b[1]) < 0.08 * a[1]  # ink mass
        assert np.abs(a[2:] - b[2:]).max() < 0.3  # centroid, pixels


def test_writers_sharing_an_example_seed_get_independent_examples():
    (a, a_labels), (b, b_labels) = examples(100, 1, 0), examples(100, 2, 0)
    assert (a_labels == b_labels).mean() < 0.3  # ~0.1 if independent, 1.0 if shared
    assert np.abs(a - b).mean() > 0.05


@pytest.mark.parametrize("stat,name", [(0, "slant"), (1, "ink mass"), (2, "centroid x")])
def test_writers_differ_in_style_far_more_than_their_examples_do(writer_stats, stat, name):
    # Identically distributed writers give F ~ 1.
    assert f_ratio([s[:, stat] for s in writer_stats]) > 30, name


def test_writers_are_not_identically_distributed():
    """Two writers' mean images differ far more than two halves of one writer's examples."""
    images = [examples(200, w)[0] for w in range(6)]
    within = [np.linalg.norm(x[:100].mean(0) - x[100:].mean(0)) for x in images]
    between = [
        np.linalg.norm(images[i].mean(0) - images[j].mean(0)) for i in range(6) for j in range(i + 1, 6)
    ]
    assert min(between) > max(within)
    assert np.median(between) > 3 * np.median(within)  # IID writers: ~0.7x


def test_a_linear_model_learns_digits_of_unseen_writers():
    def pool(writers):
        images, labels = zip(*(examples(50, w) for w in writers))
        return np.concatenate(images).reshape(-1, IMAGE_SIZE * IMAGE_SIZE), np.concatenate(labels)

    x, y = pool(range(40))
    test_x, test_y = pool(range(1000, 1010))
    weights, bias = np.zeros((x.shape[1], NUM_CLASSES), np.float32), np.zeros(NUM_CLASSES, np.float32)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    for _ in range(100):  # full-batch gradient descent on softmax cross-entropy
        logits = x @ weights + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        grad = (p / p.sum(1, keepdims=True) - onehot) / len(x)
        weights -= x.T @ grad
        bias -= grad.sum(0)
    assert ((test_x @ weights + bias).argmax(1) == test_y).mean() > 0.6
