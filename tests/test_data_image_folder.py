"""Tests of sam_jax.data.image_folder: a <split>/<class>/<image> tree read as a
streamed source, and the one-line error when it is missing."""

import dataclasses
import os

import numpy as np
import pytest

from helpers import encode
from helpers import random_image
from sam_jax import data
from sam_jax.data import streaming


def write_image_folder(root):
    """trainval: 7 images over 3 classes, test: 4; PNG and JPEG mixed."""
    rng = np.random.default_rng(0)
    layout = {'trainval': {'b747': 3, 'a320': 2, 'dc3': 2},
              'test': {'b747': 1, 'a320': 2, 'dc3': 1}}
    for split, classes in layout.items():
        for class_name, count in classes.items():
            os.makedirs(os.path.join(root, split, class_name))
            for i in range(count):
                shape = (int(rng.integers(10, 50)), int(rng.integers(10, 50)),
                         3)
                image_format = 'png' if i % 2 else 'jpeg'
                extension = {'png': 'png', 'jpeg': 'jpg'}[image_format]
                path = os.path.join(root, split, class_name,
                                    f'{i}.{extension}')
                with open(path, 'wb') as f:
                    f.write(encode(random_image(shape, i), image_format))
    with open(os.path.join(root, 'trainval', 'README.txt'), 'w') as f:
        f.write('not a class folder')


FOLDER_SPEC = dataclasses.replace(data.DATASETS['fgvc_aircraft'],
                                  num_classes=3, image_shape=(16, 16, 3))


def test_image_folder_source(tmp_path):
    write_image_folder(str(tmp_path / 'fgvc_aircraft'))
    source = data.open_image_folder('fgvc_aircraft', FOLDER_SPEC,
                                    str(tmp_path))
    assert source.class_names == ('a320', 'b747', 'dc3')
    assert source.num_examples('trainval') == 7
    assert source.num_examples('test') == 4
    assert source.num_examples('trainval[:50%]+test') == 8
    records = list(source.read('trainval').as_numpy_iterator())
    paths = source.files['trainval'][0]
    for path, record in zip(paths, records):
        class_name = os.path.basename(os.path.dirname(path))
        assert record['label'] == source.class_names.index(class_name)
        with open(path, 'rb') as f:
            assert record['image'] == f.read()
    assert sorted(np.bincount([r['label'] for r in records])) == [2, 2, 3]
    batches = list(data.streaming_eval_batches(
        source, 'test', spec=FOLDER_SPEC, global_batch_size=3))
    assert len(batches) == 2 and batches[0]['image'].shape == (3, 16, 16, 3)
    assert np.concatenate([b['mask'] for b in batches]).sum() == 4
    train = list(data.streaming_train_dataset(
        source, 'trainval', spec=FOLDER_SPEC, augmentation='basic',
        global_batch_size=7, seed=0, start_step=0,
        num_steps=2).as_numpy_iterator())
    for batch in train:
        assert sorted(batch['label']) == [0, 0, 1, 1, 1, 2, 2]


def test_missing_image_folder_error_is_one_line(tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as error:
        streaming.open_source('birdsnap', data.DATASETS['birdsnap'],
                              str(tmp_path))
    message = str(error.value)
    assert '\n' not in message
    assert "'birdsnap'" in message and '<split>/<class>/<image>' in message
    assert '--config.data_dir' in message and 'train, test' in message
    with pytest.raises(data.DatasetUnavailableError):
        data.streaming_train_dataset(
            'fgvc_aircraft', 'trainval', spec=data.DATASETS['fgvc_aircraft'],
            augmentation='basic', global_batch_size=2, seed=0, start_step=0,
            num_steps=1, data_dir=str(tmp_path))
