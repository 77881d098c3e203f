"""Tests of sam_jax.data.device_pipeline against numpy bookkeeping and,
where TensorFlow is installed, pipeline.eval_batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from helpers import AugmentSpec
from sam_jax.data import device_augment
from sam_jax.data import device_pipeline as dp

NUM_EXAMPLES = 1000
BATCH = 64  # 15 steps per epoch, 40 examples dropped each epoch.
STEPS_PER_EPOCH = NUM_EXAMPLES // BATCH


# Normalisation is the identity, so 'none' returns the stored pixels.
IDENTITY = AugmentSpec((4, 4, 1), (0.0,), (1.0,), False, 1)
CIFAR = AugmentSpec((32, 32, 3), (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), True,
                    4)

train_batch = jax.jit(dp.train_batch,
                      static_argnames=dp.TRAIN_BATCH_STATIC_ARGNAMES)


def indexed_examples():
    """Images that store their own index in two pixels; labels index % 7."""
    images = np.zeros((NUM_EXAMPLES, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(NUM_EXAMPLES) // 256
    images[:, 0, 1, 0] = np.arange(NUM_EXAMPLES) % 256
    return images, (np.arange(NUM_EXAMPLES) % 7).astype(np.int32)


def decode(batch_images):
    pixels = np.asarray(batch_images)
    return (pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 1, 0]).astype(int)


def cifar_examples(count=200):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (count, 32, 32, 3), np.uint8),
            rng.integers(0, 10, count).astype(np.int32))


def test_steps_per_epoch():
    assert dp.steps_per_epoch(1000, 64) == 15
    assert dp.steps_per_epoch(64, 64) == 1
    assert dp.epoch_of_step(29, 1000, 64) == 1
    assert dp.epoch_of_step(30, 1000, 64) == 2
    with pytest.raises(ValueError, match='larger than the dataset'):
        dp.steps_per_epoch(63, 64)


def test_epoch_permutation():
    perms = {(seed, epoch): np.asarray(dp.epoch_permutation(seed, epoch, 1000))
             for seed in (0, 1) for epoch in (0, 1)}
    for perm in perms.values():
        assert perm.dtype == np.int32
        np.testing.assert_array_equal(np.sort(perm), np.arange(1000))
    values = list(perms.values())
    assert all(not np.array_equal(a, b) for i, a in enumerate(values)
               for b in values[i + 1:])
    # Traced seed and epoch (as inside a jitted loop) give the same order.
    traced = jax.jit(dp.epoch_permutation, static_argnums=2)(
        jnp.int32(1), jnp.int32(1), 1000)
    np.testing.assert_array_equal(traced, perms[1, 1])


def test_each_epoch_visits_each_example_once():
    images, labels = indexed_examples()
    for epoch in (0, 1):
        perm = np.asarray(dp.epoch_permutation(5, epoch, NUM_EXAMPLES))
        seen = []
        for step in range(epoch * STEPS_PER_EPOCH,
                          (epoch + 1) * STEPS_PER_EPOCH):
            batch = train_batch(images, labels, perm, step, seed=5,
                                global_batch_size=BATCH, first=0, count=BATCH,
                                spec=IDENTITY, augmentation='none')
            indices = decode(batch['image'])
            offset = (step % STEPS_PER_EPOCH) * BATCH
            np.testing.assert_array_equal(indices, perm[offset:offset + BATCH])
            np.testing.assert_array_equal(batch['label'], labels[indices])
            assert batch['label'].dtype == jnp.int32
            seen.extend(indices)
        assert len(seen) == len(set(seen)) == STEPS_PER_EPOCH * BATCH
        # The dropped remainder is the permutation's tail.
        assert set(range(NUM_EXAMPLES)) - set(seen) == set(
            perm[STEPS_PER_EPOCH * BATCH:])


def test_slices_concatenate_to_the_global_batch():
    images, labels = cifar_examples()
    perm = dp.epoch_permutation(1, 0, len(labels))
    kwargs = dict(seed=1, global_batch_size=32, spec=CIFAR,
                  augmentation='cutout')
    whole = train_batch(images, labels, perm, 4, first=0, count=32, **kwargs)
    for cuts in ([0, 8, 16, 24, 32], [0, 5, 32]):
        parts = [train_batch(images, labels, perm, 4, first=start,
                             count=end - start, **kwargs)
                 for start, end in zip(cuts[:-1], cuts[1:])]
        for name in ('image', 'label'):
            np.testing.assert_array_equal(
                np.concatenate([p[name] for p in parts]), whole[name])


def test_under_shard_map_each_device_takes_its_slice():
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip('needs several (virtual) devices')
    mesh = Mesh(np.array(devices), ('data',))
    per_device = 4
    global_batch = per_device * len(devices)
    images, labels = cifar_examples()
    perm = dp.epoch_permutation(2, 0, len(labels))

    def per_device_batch(images, labels, perm, step):
        first = jax.lax.axis_index('data') * per_device
        return dp.train_batch(images, labels, perm, step, seed=2,
                              global_batch_size=global_batch, first=first,
                              count=per_device, spec=CIFAR,
                              augmentation='cutout')

    sharded = jax.jit(jax.shard_map(
        per_device_batch, mesh=mesh, in_specs=(P(), P(), P(), P()),
        out_specs=P('data')))(images, labels, perm, jnp.int32(3))
    whole = train_batch(images, labels, perm, 3, seed=2,
                        global_batch_size=global_batch, first=0,
                        count=global_batch, spec=CIFAR, augmentation='cutout')
    for name in ('image', 'label'):
        np.testing.assert_array_equal(sharded[name], whole[name])


def test_batch_is_the_augmented_gather():
    """train_batch = gather perm's examples, augment each with the key of
    its global position (device_augment is tested on its own)."""
    images, labels = cifar_examples()
    perm = np.asarray(dp.epoch_permutation(3, 1, len(labels)))
    steps = len(labels) // 16
    step = steps + 2  # Second epoch.
    batch = train_batch(images, labels, perm, step, seed=3,
                        global_batch_size=16, first=4, count=8, spec=CIFAR,
                        augmentation='basic')
    indices = perm[2 * 16 + 4:2 * 16 + 12]
    keys = dp.example_keys(3, step, global_batch_size=16, first=4, count=8)
    np.testing.assert_array_equal(
        batch['image'],
        device_augment.augment_batch(images[indices], keys, CIFAR, 'basic'))
    np.testing.assert_array_equal(batch['label'], labels[indices])


def test_augmentation_key_is_a_function_of_global_position():
    def key_data(step, first, count, seed=0):
        return np.asarray(jax.random.key_data(dp.example_keys(
            seed, step, global_batch_size=16, first=first, count=count)))

    # Position 16 * 2 + 3 = 35 both ways.
    np.testing.assert_array_equal(key_data(2, 3, 1), key_data(1, 19, 1))
    whole = key_data(5, 0, 16)
    assert len({row.tobytes() for row in whole}) == 16
    assert not (key_data(5, 0, 16, seed=1) == whole).all(axis=1).any()


def test_restart_at_any_step_reproduces_the_run():
    images, labels = cifar_examples()
    kwargs = dict(seed=7, global_batch_size=32, first=0, count=32, spec=CIFAR,
                  augmentation='cutout')
    steps = dp.steps_per_epoch(len(labels), 32)  # 6
    # An uninterrupted run: the permutation is recomputed at epoch changes.
    run = []
    for step in range(2 * steps + 2):
        if step % steps == 0:
            perm = dp.epoch_permutation(7, step // steps, len(labels))
        run.append(train_batch(images, labels, perm, step, **kwargs))
    jax.clear_caches()  # A restarted process compiles afresh.
    for restart in (steps - 1, steps, 2 * steps + 1):
        perm = dp.epoch_permutation(
            7, dp.epoch_of_step(restart, len(labels), 32), len(labels))
        again = train_batch(images, labels, perm, restart, **kwargs)
        for name in ('image', 'label'):
            np.testing.assert_array_equal(again[name], run[restart][name])


def test_different_seeds_give_different_batches():
    images, labels = indexed_examples()
    batches = [train_batch(images, labels,
                           dp.epoch_permutation(seed, 0, NUM_EXAMPLES), 0,
                           seed=seed, global_batch_size=BATCH, first=0,
                           count=BATCH, spec=IDENTITY, augmentation='none')
               for seed in (0, 1)]
    first, second = (set(decode(b['image'])) for b in batches)
    assert len(first & second) < BATCH // 2  # ~4 shared by chance.


def test_mismatched_arrays_rejected():
    images, labels = indexed_examples()
    with pytest.raises(ValueError, match='must be equal'):
        dp.train_batch(images, labels[:-1],
                       dp.epoch_permutation(0, 0, NUM_EXAMPLES), 0, seed=0,
                       global_batch_size=BATCH, first=0, count=BATCH,
                       spec=IDENTITY, augmentation='none')


# -------------------------------------------------------------- evaluation


def test_pad_eval_set():
    images, labels = indexed_examples()
    padded_images, padded_labels, mask = dp.pad_eval_set(images, labels, 96)
    assert dp.num_eval_batches(NUM_EXAMPLES, 96) == 11  # ceil(1000 / 96)
    assert padded_images.shape == (1056, 4, 4, 1) and mask.shape == (1056,)
    np.testing.assert_array_equal(padded_images[:1000], images)
    assert not padded_images[1000:].any() and not padded_labels[1000:].any()
    np.testing.assert_array_equal(mask, np.arange(1056) < 1000)


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_covers_each_example_once(process_count):
    images, labels = indexed_examples()
    seen_images, seen_labels = [], []
    for process_index in range(process_count):
        batches = list(dp.eval_batches(
            images, labels, spec=IDENTITY, global_batch_size=96,
            process_index=process_index, process_count=process_count))
        assert len(batches) == 11
        for batch in batches:
            assert batch['image'].shape == (96 // process_count, 4, 4, 1)
            real = np.asarray(batch['mask']) == 1
            assert not np.asarray(batch['image'])[~real].any()
            seen_images.extend(decode(batch['image'])[real])
            seen_labels.extend(np.asarray(batch['label'])[real])
    order = np.argsort(seen_images)
    np.testing.assert_array_equal(np.array(seen_images)[order],
                                  np.arange(NUM_EXAMPLES))
    np.testing.assert_array_equal(np.array(seen_labels)[order], labels)


@pytest.mark.parametrize('process_index,process_count', [(0, 1), (1, 2)])
def test_eval_batches_equal_the_tf_pipeline(process_index, process_count):
    pytest.importorskip('tensorflow')
    from sam_jax.data import pipeline
    images, labels = cifar_examples(150)
    kwargs = dict(spec=CIFAR, global_batch_size=64,
                  process_index=process_index, process_count=process_count)
    expected = list(pipeline.eval_batches(images, labels, **kwargs))
    got = list(dp.eval_batches(images, labels, **kwargs))
    assert len(got) == len(expected) == 3
    for got_batch, expected_batch in zip(got, expected):
        assert set(got_batch) == set(expected_batch)
        for name in ('label', 'mask'):
            np.testing.assert_array_equal(got_batch[name],
                                          expected_batch[name])
            assert got_batch[name].dtype == expected_batch[name].dtype
        np.testing.assert_allclose(got_batch['image'], expected_batch['image'],
                                   rtol=1e-6, atol=1e-6)
