"""Tests of sam_jax.data.streaming: resumption, host slices and epoch coverage
of the streamed pipelines, on tfds mock data and on a small prepared builder.

Coverage is checked by example identity (labels, or exact images).
"""

import dataclasses

from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sam_jax import data
from sam_jax.data import imagenet_preprocessing as inet
from sam_jax.data import streaming


# ------------------------------------------------------- streaming: mock


MOCK_EXAMPLES = 24


IMAGENET_SPEC = data.DATASETS['imagenet2012']


def mock_train_batches(**kwargs):
    settings = dict(spec=IMAGENET_SPEC, augmentation='basic',
                    global_batch_size=4, seed=0, start_step=0, num_steps=14,
                    image_size=16, shuffle_window=8, num_chunks=3)
    settings.update(kwargs)
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return list(data.streaming_train_dataset(
            'imagenet2012', 'train', **settings).as_numpy_iterator())


@pytest.fixture(scope='module')
def mock_batches_from_start():
    # 24 examples / batch 4: 6 steps per epoch; 14 steps span 3 epochs.
    return mock_train_batches()


@pytest.mark.parametrize('start_step', [5, 6, 13])
def test_streaming_resume_reproduces_batches_bit_for_bit(
        mock_batches_from_start, start_step):
    from_start = mock_batches_from_start
    resumed = mock_train_batches(start_step=start_step)
    assert len(from_start) == 14 and len(resumed) == 14 - start_step
    for got, want in zip(resumed, from_start[start_step:]):
        assert got['image'].shape == (4, 16, 16, 3)
        assert got['image'].dtype == np.float32
        assert got['label'].dtype == np.int32
        np.testing.assert_array_equal(got['label'], want['label'])
        np.testing.assert_array_equal(got['image'], want['image'])


def test_streaming_seed_changes_order_and_augmentation(
        mock_batches_from_start):
    other_seed = mock_train_batches(seed=1, num_steps=6)
    first = mock_batches_from_start
    assert not np.array_equal(other_seed[0]['image'], first[0]['image'])
    assert not np.array_equal(
        np.concatenate([b['label'] for b in other_seed]),
        np.concatenate([b['label'] for b in first[:6]]))


def test_streaming_epoch_covers_each_mock_example_once():
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        source = streaming.open_source('imagenet2012', IMAGENET_SPEC)
        references = [
            inet.preprocess_for_eval(record['image'], spec=IMAGENET_SPEC,
                                     image_size=16).numpy()
            for record in source.read('train')]
    assert len({r.tobytes() for r in references}) == MOCK_EXAMPLES

    def example_ids(batches):
        return [next(i for i, r in enumerate(references)
                     if np.array_equal(image, r))
                for batch in batches for image in batch['image']]

    batches = mock_train_batches(augmentation='none', num_steps=12,
                                 global_batch_size=4)
    first_epoch, second_epoch = example_ids(batches[:6]), example_ids(
        batches[6:])
    assert sorted(first_epoch) == list(range(MOCK_EXAMPLES))
    assert sorted(second_epoch) == list(range(MOCK_EXAMPLES))
    assert first_epoch != second_epoch


def mock_eval_batches(**kwargs):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return list(data.streaming_eval_batches(
            'imagenet2012', 'validation', spec=IMAGENET_SPEC, image_size=16,
            **kwargs))


@pytest.mark.parametrize('global_batch_size', [5, 24, 32])
def test_streaming_eval_covers_each_example_once_with_padding(
        global_batch_size):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        source = streaming.open_source('imagenet2012', IMAGENET_SPEC)
        records = list(source.read('validation').as_numpy_iterator())
    batches = mock_eval_batches(global_batch_size=global_batch_size)
    assert len(batches) == data.num_eval_batches(MOCK_EXAMPLES,
                                                 global_batch_size)
    mask = np.concatenate([b['mask'] for b in batches])
    assert mask.dtype == np.float32 and mask.sum() == MOCK_EXAMPLES
    assert np.all(mask[:MOCK_EXAMPLES] == 1)
    labels = np.concatenate([b['label'] for b in batches])
    np.testing.assert_array_equal(labels[:MOCK_EXAMPLES],
                                  [r['label'] for r in records])
    images = np.concatenate([b['image'] for b in batches])
    assert images.shape[1:] == (16, 16, 3)
    assert np.all(images[MOCK_EXAMPLES:] == 0)
    np.testing.assert_array_equal(
        images[7], inet.preprocess_for_eval(
            records[7]['image'], spec=IMAGENET_SPEC, image_size=16).numpy())


def test_streaming_eval_host_slices_concatenate_to_global_batches():
    # 24 examples in batches of 10: the last global batch holds 4, all on
    # host 0 (host 1's slice is pure padding).
    global_batches = mock_eval_batches(global_batch_size=10)
    hosts = [mock_eval_batches(global_batch_size=10, process_index=k,
                               process_count=2) for k in range(2)]
    assert [len(h) for h in hosts] == [3, 3]
    assert hosts[1][2]['mask'].sum() == 0
    for step, want in enumerate(global_batches):
        for key in ('image', 'label', 'mask'):
            got = np.concatenate([host[step][key] for host in hosts])
            np.testing.assert_array_equal(got, want[key])


def test_streaming_rejects_in_memory_only_augmentations():
    with pytest.raises(ValueError, match='not available for streamed'):
        data.streaming_train_dataset(
            'imagenet2012', 'train', spec=IMAGENET_SPEC, augmentation='cutout',
            global_batch_size=4, seed=0, start_step=0, num_steps=1)


# ----------------------------------------- streaming: a prepared builder


NUM_TRAIN = 40


NUM_TEST = 13


class ZooTestImages(tfds.core.GeneratorBasedBuilder):
    """JPEGs of various sizes; label = position, to identify examples."""

    VERSION = tfds.core.Version('1.0.0')

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(encoding_format='jpeg'),
                'label': tfds.features.ClassLabel(num_classes=NUM_TRAIN),
                # Not read by the pipeline (PartialDecoding skips it).
                'file_name': tfds.features.Text(),
            }),
            disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {'train': self._generate_examples(NUM_TRAIN, 0),
                'test': self._generate_examples(NUM_TEST, 1000)}

    def _generate_examples(self, count, key):
        rng = np.random.default_rng(key)
        for i in range(count):
            shape = (int(rng.integers(8, 40)), int(rng.integers(8, 40)), 3)
            yield i, {'image': rng.integers(0, 256, shape, np.uint8),
                      'label': i, 'file_name': f'{key + i}.jpg'}


ZOO_SPEC = dataclasses.replace(IMAGENET_SPEC, tfds_name='zoo_test_images',
                               num_classes=NUM_TRAIN, image_shape=(16, 16, 3))


@pytest.fixture(scope='module')
def zoo_builder(tmp_path_factory):
    builder = ZooTestImages(data_dir=str(tmp_path_factory.mktemp('zoo')))
    builder.download_and_prepare()
    return builder


def zoo_batches(builder, **kwargs):
    settings = dict(spec=ZOO_SPEC, augmentation='basic', global_batch_size=8,
                    seed=0, start_step=0, num_steps=10, shuffle_window=16,
                    num_chunks=4)
    settings.update(kwargs)
    return list(data.streaming_train_dataset(
        builder, 'train', **settings).as_numpy_iterator())


def test_streaming_hosts_read_disjoint_shares_each_once(zoo_builder):
    # 40 examples, 2 hosts of 20, 4 per host per step: 5 steps per epoch.
    assert data.split_size(zoo_builder, 'train', spec=ZOO_SPEC) == NUM_TRAIN
    for host in range(2):
        batches = zoo_batches(zoo_builder, process_index=host,
                              process_count=2)
        assert len(batches) == 10
        assert batches[0]['image'].shape == (4, 16, 16, 3)
        epochs = [np.concatenate([b['label'] for b in batches[e * 5:
                                                              (e + 1) * 5]])
                  for e in range(2)]
        share = list(range(host * 20, (host + 1) * 20))
        assert sorted(epochs[0]) == share and sorted(epochs[1]) == share
        assert not np.array_equal(epochs[0], epochs[1])


def test_streaming_chunk_order_changes_per_epoch(zoo_builder):
    # Window 1 = no record shuffle: the order is the chunk interleave alone.
    batches = zoo_batches(zoo_builder, shuffle_window=1, num_chunks=4,
                          global_batch_size=10, num_steps=8)
    epochs = [np.concatenate([b['label'] for b in batches[e * 4:
                                                          (e + 1) * 4]])
              for e in range(2)]
    for labels in epochs:
        assert sorted(labels) == list(range(NUM_TRAIN))
        # Each chunk of 10 consecutive examples is read in order.
        for chunk in range(4):
            in_chunk = labels[(labels >= chunk * 10)
                              & (labels < (chunk + 1) * 10)]
            assert np.all(np.diff(in_chunk) == 1)
    assert not np.array_equal(epochs[0], epochs[1])


HOST_1_RANDAUGMENT = dict(augmentation='randaugment', process_index=1,
                          process_count=2)


@pytest.fixture(scope='module')
def zoo_host_1_from_start(zoo_builder):
    return zoo_batches(zoo_builder, **HOST_1_RANDAUGMENT)


@pytest.mark.parametrize('start_step', [4, 7])
def test_streaming_multi_host_resume_bit_for_bit(zoo_builder,
                                                 zoo_host_1_from_start,
                                                 start_step):
    # 5 steps per epoch: step 4 ends epoch 0, step 7 is inside epoch 1.
    resumed = zoo_batches(zoo_builder, start_step=start_step,
                          **HOST_1_RANDAUGMENT)
    assert len(resumed) == 10 - start_step
    for got, want in zip(resumed, zoo_host_1_from_start[start_step:]):
        np.testing.assert_array_equal(got['label'], want['label'])
        np.testing.assert_array_equal(got['image'], want['image'])


def test_streaming_validation_split_slices(zoo_builder):
    train, held_out = data.train_and_eval_splits(ZOO_SPEC, True)
    assert data.split_size(zoo_builder, train, spec=ZOO_SPEC) == 36
    batches = list(data.streaming_eval_batches(
        zoo_builder, held_out, spec=ZOO_SPEC, global_batch_size=3))
    labels = np.concatenate([b['label'] for b in batches])
    mask = np.concatenate([b['mask'] for b in batches])
    np.testing.assert_array_equal(labels[mask == 1], range(36, 40))
