"""Images/s of the device-resident input path against the tf.data one.

  python scripts/input_throughput.py [--batch_sizes=128,256] [--rounds=5]

Both produce the training batches of CIFAR-10-shaped data (random uint8,
50,000 images) with the 'cutout' augmentation (reflect-pad crop, flip,
normalise, cutout):

  device  jit(device_pipeline.train_batch) on arrays already on the device;
          the epoch permutation is recomputed when the epoch changes.
  tfdata  pipeline.train_dataset's numpy batches, put on the device
          (jax.device_put), as the trainer consumes them.

How it measures: rounds alternate the two paths (order rotated every
round); in a round each path produces --batches batches after --warmup
untimed ones. The tf.data iterator is built afresh for every round (not
timed) so that no batch prefetched during the other path's turn is
counted. A rate is the median over rounds; machine load therefore shifts
both sides of the ratio alike. Without TensorFlow (e.g. on the GPU
machines) only the device path is measured.
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402  (after the environment is set)
import numpy as np  # noqa: E402

from sam_jax.data import device_pipeline  # noqa: E402

# sources.DATASETS['cifar10'], restated so that this runs without TF.
_CIFAR10 = dict(image_shape=(32, 32, 3), mean=(125.3, 123.0, 113.9),
                std=(63.0, 62.1, 66.7), flip=True, crop_padding=4)


def _cifar10_spec():
    try:
        from sam_jax.data import sources
        return sources.get_spec('cifar10')
    except ImportError:  # No TensorFlow: an equivalent hashable spec.
        import dataclasses
        spec_type = dataclasses.make_dataclass(
            'Spec', list(_CIFAR10), frozen=True)
        return spec_type(**_CIFAR10)


def _device_workload(images, labels, spec, batch_size, augmentation, seed):
    """() -> time for `count` batches starting where the last call ended."""
    step_fn = jax.jit(
        device_pipeline.train_batch,
        static_argnames=device_pipeline.TRAIN_BATCH_STATIC_ARGNAMES)
    images, labels = jax.device_put(images), jax.device_put(labels)
    num_examples = images.shape[0]
    steps_per_epoch = device_pipeline.steps_per_epoch(num_examples, batch_size)
    state = {'step': 0, 'epoch': None, 'perm': None}

    def run(count):
        start = time.perf_counter()
        for _ in range(count):
            step = state['step']
            epoch = step // steps_per_epoch
            if epoch != state['epoch']:
                state['perm'] = device_pipeline.epoch_permutation(
                    seed, epoch, num_examples)
                state['epoch'] = epoch
            batch = step_fn(images, labels, state['perm'], step, seed=seed,
                            global_batch_size=batch_size, first=0,
                            count=batch_size, spec=spec,
                            augmentation=augmentation)
            state['step'] += 1
        jax.block_until_ready(batch)
        return time.perf_counter() - start
    return run


def _tfdata_workload(images, labels, spec, batch_size, augmentation, seed,
                     warmup):
    from sam_jax.data import pipeline
    state = {'step': 0}

    def run(count):
        # A fresh iterator: nothing is prefetched while the other path runs.
        dataset = pipeline.train_dataset(
            images, labels, spec=spec, augmentation=augmentation,
            global_batch_size=batch_size, seed=seed,
            start_step=state['step'], num_steps=state['step'] + warmup + count)
        iterator = dataset.as_numpy_iterator()
        for _ in range(warmup):
            jax.block_until_ready(jax.device_put(next(iterator)))
        start = time.perf_counter()
        for _ in range(count):
            batch = jax.device_put(next(iterator))
        jax.block_until_ready(batch)
        elapsed = time.perf_counter() - start
        state['step'] += warmup + count
        del iterator, dataset
        return elapsed
    return run


def measure_input_throughput(batch_sizes=(128, 256), num_images=50_000,
                             rounds=5, batches=20, warmup=3,
                             augmentation='cutout', seed=0) -> list[dict]:
    """Median images/s of each path per batch size (see the module doc).

    Returns:
        One dict per batch size: batch_size, device_images_per_s,
        tfdata_images_per_s (None without TensorFlow), ratio
        (device / tfdata, or None), and each path's per-round rates.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_images, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, num_images).astype(np.int32)
    spec = _cifar10_spec()
    try:
        import tensorflow  # noqa: F401
        have_tf = True
    except ImportError:
        have_tf = False
    results = []
    for batch_size in batch_sizes:
        workloads = {'device': _device_workload(images, labels, spec,
                                                batch_size, augmentation,
                                                seed)}
        if have_tf:
            workloads['tfdata'] = _tfdata_workload(
                images, labels, spec, batch_size, augmentation, seed, warmup)
        workloads['device'](warmup)  # Compiles.
        rates = {name: [] for name in workloads}
        names = list(workloads)
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                rates[name].append(batches * batch_size
                                   / workloads[name](batches))
        device = statistics.median(rates['device'])
        tfdata = statistics.median(rates['tfdata']) if have_tf else None
        results.append(dict(
            batch_size=batch_size, device_images_per_s=device,
            tfdata_images_per_s=tfdata,
            ratio=device / tfdata if tfdata else None,
            device_rounds=rates['device'], tfdata_rounds=rates.get('tfdata')))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch_sizes', default='128,256')
    parser.add_argument('--num_images', type=int, default=50_000)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--batches', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--augmentation', default='cutout')
    args = parser.parse_args(argv)
    print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
          f'{os.cpu_count()} CPUs, load average '
          f'{os.getloadavg()[0]:.1f}, python {platform.python_version()}, '
          f'jax {jax.__version__}; {args.num_images} CIFAR-shaped images, '
          f"'{args.augmentation}', median of {args.rounds} interleaved "
          f'rounds of {args.batches} batches')
    results = measure_input_throughput(
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(',')),
        num_images=args.num_images, rounds=args.rounds, batches=args.batches,
        warmup=args.warmup, augmentation=args.augmentation)
    for r in results:
        tfdata = (f"{r['tfdata_images_per_s']:9.0f}"
                  if r['tfdata_images_per_s'] else '      n/a')
        ratio = f"{r['ratio']:.2f}x" if r['ratio'] else 'n/a'
        print(f"batch {r['batch_size']:4d}: device "
              f"{r['device_images_per_s']:9.0f} images/s, tf.data {tfdata} "
              f'images/s, device / tf.data {ratio}')
        print(f"  per round: device {[round(x) for x in r['device_rounds']]}"
              + (f", tf.data {[round(x) for x in r['tfdata_rounds']]}"
                 if r['tfdata_rounds'] else ''))
    return results


if __name__ == '__main__':
    main(sys.argv[1:])
