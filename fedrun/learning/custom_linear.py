"""The seed tutorial's hand-written model: a linear softmax classifier on TFF's VariableModel.

It owns its variables (weights, bias, and the metric sums: examples, loss, correct predictions),
reports the sums unfinalized so TFF adds them across clients before dividing, which makes
`loss` and `accuracy` example-weighted means. The loss is computed from the logits, as Keras does
for a softmax output, so training follows the Keras `linear` model step for step.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff


class CustomLinear(tff.learning.models.VariableModel):
    def __init__(self, features: int, num_classes: int, kernel: tf.keras.initializers.Initializer):
        self._input_spec = collections.OrderedDict(
            x=tf.TensorSpec([None, features], tf.float32), y=tf.TensorSpec([None, 1], tf.int32)
        )
        self._weights = tf.Variable(kernel([features, num_classes]), name="weights")
        self._bias = tf.Variable(tf.zeros([num_classes]), name="bias")
        self._num_examples = tf.Variable(0.0, name="num_examples", trainable=False)
        self._loss_sum = tf.Variable(0.0, name="loss_sum", trainable=False)
        self._accuracy_sum = tf.Variable(0.0, name="accuracy_sum", trainable=False)

    @property
    def trainable_variables(self):
        return [self._weights, self._bias]

    @property
    def non_trainable_variables(self):
        return []

    @property
    def local_variables(self):
        return [self._num_examples, self._loss_sum, self._accuracy_sum]

    @property
    def input_spec(self):
        return self._input_spec

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self._weights) + self._bias

    @tf.function
    def predict_on_batch(self, x, training=True):
        del training  # no dropout or batch statistics
        return tf.nn.softmax(self._logits(x))

    @tf.function
    def forward_pass(self, batch_input, training=True):
        del training
        logits = self._logits(batch_input["x"])
        predictions = tf.nn.softmax(logits)
        labels = tf.reshape(batch_input["y"], [-1])
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        num_examples = tf.cast(tf.size(labels), tf.float32)
        loss = tf.math.divide_no_nan(tf.reduce_sum(per_example), num_examples)
        correct = tf.cast(tf.equal(tf.argmax(predictions, axis=1, output_type=tf.int32), labels), tf.float32)
        self._num_examples.assign_add(num_examples)
        self._loss_sum.assign_add(loss * num_examples)
        self._accuracy_sum.assign_add(tf.reduce_sum(correct))
        return tff.learning.models.BatchOutput(
            loss=loss, predictions=predictions, num_examples=tf.size(labels)
        )

    @tf.function
    def report_local_unfinalized_metrics(self):
        return collections.OrderedDict(
            num_examples=[self._num_examples],
            loss=[self._loss_sum, self._num_examples],
            accuracy=[self._accuracy_sum, self._num_examples],
        )

    def metric_finalizers(self):
        return collections.OrderedDict(
            num_examples=tf.function(lambda sums: sums[0]),
            loss=tf.function(lambda sums: tf.math.divide_no_nan(sums[0], sums[1])),
            accuracy=tf.function(lambda sums: tf.math.divide_no_nan(sums[0], sums[1])),
        )

    @tf.function
    def reset_metrics(self):
        for variable in self.local_variables:
            variable.assign(tf.zeros_like(variable))
