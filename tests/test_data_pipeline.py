"""Tests of sam_jax.data.pipeline (the in-memory tf.data pipelines): epochs,
resumption, host slices, seeds, padded evaluation batches and resizing, on
examples whose label is their index."""

import numpy as np
import pytest

from helpers import reference_normalize
from sam_jax import data

DIGITS_SPEC = data.DATASETS['digits']


NUM_EXAMPLES = 100


@pytest.fixture(scope='module')
def indexed_examples():
    """Unique images; label i is the example index, to identify examples."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_EXAMPLES, 8, 8, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(NUM_EXAMPLES)  # Makes images unique.
    return images, np.arange(NUM_EXAMPLES, dtype=np.int32)


def train_batches(examples, **kwargs):
    images, labels = examples
    settings = dict(spec=DIGITS_SPEC, augmentation='none',
                    global_batch_size=16, seed=0, start_step=0, num_steps=9)
    settings.update(kwargs)
    return list(data.as_numpy_iterator(
        data.train_dataset(images, labels, **settings)))


def test_steps_per_epoch():
    assert data.steps_per_epoch(100, 16) == 6
    assert data.steps_per_epoch(96, 16) == 6
    with pytest.raises(ValueError, match='larger than the dataset'):
        data.steps_per_epoch(10, 16)


def test_one_epoch_visits_each_example_at_most_once(indexed_examples):
    images, _ = indexed_examples
    batches = train_batches(indexed_examples, num_steps=12)
    assert len(batches) == 12
    for batch in batches:
        assert batch['image'].shape == (16, 8, 8, 1)
        assert batch['image'].dtype == np.float32
        assert batch['label'].dtype == np.int32
        np.testing.assert_allclose(
            batch['image'], reference_normalize(images[batch['label']],
                                                DIGITS_SPEC), rtol=1e-6)
    for epoch in range(2):
        seen = np.concatenate(
            [b['label'] for b in batches[epoch * 6:(epoch + 1) * 6]])
        assert len(seen) == 96 and len(np.unique(seen)) == 96
    first_epoch = np.concatenate([b['label'] for b in batches[:6]])
    second_epoch = np.concatenate([b['label'] for b in batches[6:]])
    assert not np.array_equal(first_epoch, second_epoch)


@pytest.mark.parametrize('start_step', [4, 7, 9])
def test_resumed_run_reproduces_batches_bit_for_bit(indexed_examples,
                                                    start_step):
    from_start = train_batches(indexed_examples, augmentation='cutout')
    resumed = train_batches(indexed_examples, augmentation='cutout',
                            start_step=start_step)
    assert len(resumed) == 9 - start_step
    for got, want in zip(resumed, from_start[start_step:]):
        np.testing.assert_array_equal(got['label'], want['label'])
        np.testing.assert_array_equal(got['image'], want['image'])


def test_process_slices_concatenate_to_global_batch(indexed_examples):
    global_batches = train_batches(indexed_examples, augmentation='cutout')
    host_batches = [
        train_batches(indexed_examples, augmentation='cutout',
                      process_index=k, process_count=2) for k in range(2)]
    for step, want in enumerate(global_batches):
        for key in ('image', 'label'):
            got = np.concatenate([host_batches[k][step][key]
                                  for k in range(2)])
            np.testing.assert_array_equal(got, want[key])
    assert host_batches[0][0]['image'].shape == (8, 8, 8, 1)


def test_different_seeds_give_different_orders(indexed_examples):
    labels_0 = np.concatenate(
        [b['label'] for b in train_batches(indexed_examples, num_steps=2)])
    labels_1 = np.concatenate(
        [b['label'] for b in train_batches(indexed_examples, num_steps=2,
                                           seed=1)])
    assert not np.array_equal(labels_0, labels_1)


@pytest.mark.parametrize('global_batch_size', [7, 16, 50, 100, 128])
def test_eval_batches_cover_each_example_once(indexed_examples,
                                              global_batch_size):
    images, labels = indexed_examples
    batches = list(data.eval_batches(images, labels, spec=DIGITS_SPEC,
                                     global_batch_size=global_batch_size))
    assert len(batches) == -(-NUM_EXAMPLES // global_batch_size)
    assert len(batches) == data.num_eval_batches(NUM_EXAMPLES,
                                                 global_batch_size)
    for batch in batches:
        assert batch['image'].shape == (global_batch_size, 8, 8, 1)
        assert batch['label'].shape == batch['mask'].shape
        assert batch['mask'].dtype == np.float32
    mask = np.concatenate([b['mask'] for b in batches])
    assert mask.sum() == NUM_EXAMPLES
    real = mask == 1
    np.testing.assert_array_equal(
        np.concatenate([b['label'] for b in batches])[real], labels)
    all_images = np.concatenate([b['image'] for b in batches])
    np.testing.assert_allclose(all_images[real],
                               reference_normalize(images, DIGITS_SPEC),
                               rtol=1e-6)
    assert np.all(all_images[~real] == 0)


def test_eval_batches_multi_process_slices(indexed_examples):
    images, labels = indexed_examples
    global_batches = list(data.eval_batches(
        images, labels, spec=DIGITS_SPEC, global_batch_size=32))
    host_batches = [list(data.eval_batches(
        images, labels, spec=DIGITS_SPEC, global_batch_size=32,
        process_index=k, process_count=4)) for k in range(4)]
    for step, want in enumerate(global_batches):
        for key in ('image', 'label', 'mask'):
            got = np.concatenate([host_batches[k][step][key]
                                  for k in range(4)])
            np.testing.assert_array_equal(got, want[key])


def test_in_memory_images_are_resized_to_image_size():
    spec = data.DATASETS["cifar10"]
    rng = np.random.default_rng(0)
    # Constant images stay constant under (bicubic) resizing: the reference is
    # the normalised colour itself.
    colours = rng.integers(0, 256, (5, 1, 1, 3)).astype(np.uint8)
    images = np.broadcast_to(colours, (5, 32, 32, 3)).copy()
    labels = np.arange(5, dtype=np.int32)
    want = (colours.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
    (batch,) = data.eval_batches(images, labels, spec=spec, global_batch_size=8,
                                 image_size=48)
    assert batch["image"].shape == (8, 48, 48, 3)
    np.testing.assert_allclose(batch["image"][:5], np.broadcast_to(want, (5, 48, 48, 3)),
                               atol=1e-4)
    (train_batch,) = data.train_dataset(
        images, labels, spec=spec, augmentation="basic", global_batch_size=4, seed=0,
        start_step=0, num_steps=1, image_size=48).as_numpy_iterator()
    assert train_batch["image"].shape == (4, 48, 48, 3)
    np.testing.assert_allclose(  # crop and flip move nothing in a constant image
        train_batch["image"], np.broadcast_to(want[train_batch["label"]], (4, 48, 48, 3)),
        atol=1e-4)


def test_in_memory_randaugment_honours_n_and_m():
    """config.randaugment reaches the in-memory tf.data path (it was fixed at
    N = 2, M = 9 there): N = 0 applies no op, so the batch is the 'basic' one
    of the same seed; M changes what the ops do."""
    rng = np.random.default_rng(1)
    spec = data.DATASETS["cifar10"]
    images = rng.integers(0, 256, (8, 32, 32, 3), np.uint8)
    examples = (images, np.arange(8, dtype=np.int32))
    common = dict(spec=spec, global_batch_size=8, num_steps=1)
    (basic,) = train_batches(examples, augmentation="basic", **common)
    (no_ops,) = train_batches(examples, augmentation="randaugment",
                              randaugment_num_layers=0, **common)
    np.testing.assert_array_equal(no_ops["image"], basic["image"])
    (gentle,) = train_batches(examples, augmentation="randaugment",
                              randaugment_magnitude=1, **common)
    (default,) = train_batches(examples, augmentation="randaugment", **common)
    assert not np.array_equal(gentle["image"], default["image"])
    assert not np.array_equal(default["image"], basic["image"])
