"""The strings that name a client's data: split names and the training key format.

Free of TensorFlow: the coordinator builds keys for every round; workers parse them with TF ops
(fedrun.data.preprocessing).
"""

TRAIN = "train"
TEST = "test"


def train_key(data_key: str, shuffle_seed: int) -> str:
    """A training key also carries the client's shuffle seed, so its batches are the same
    whichever worker builds them."""
    return f"{shuffle_seed}|{data_key}"
