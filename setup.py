"""sam_jax: Sharpness-Aware Minimization for JAX / Flax / optax."""

import setuptools

setuptools.setup(
    name="sam_jax",
    version="0.1.0",
    description=("Sharpness-Aware Minimization (Foret et al., ICLR 2021) as an "
                 "optax transform, with config-driven trainers that reproduce "
                 "the paper."),
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    # The declarations travel inside the package, so an installed copy finds
    # its configs and tables from any directory (sam_jax/declarations.py).
    packages=(setuptools.find_packages(include=["sam_jax", "sam_jax.*"])
              + ["sam_jax.configs"]
              + ["sam_jax.experiments" + p.removeprefix("experiments")
                 for p in setuptools.find_packages(include=["experiments",
                                                            "experiments.*"])]),
    package_dir={"sam_jax.configs": "configs", "sam_jax.experiments": "experiments"},
    python_requires=">=3.11",
    # Lower bounds are the versions the test suite was run with.
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "tensorflow-cpu>=2.21.0",
        "tensorflow-datasets>=4.9.10",
        "tensorboard>=2.21",  # tf.summary writes event files only with it
        "ml-collections>=1.1.0",
        "absl-py>=2.5.1",
        "numpy>=2.4",
        "scikit-learn>=1.9.1",  # ships the offline default data set (digits)
        "matplotlib>=3.11",
    ],
    extras_require={
        # tests/test_install.py builds the wheel without build isolation.
        "test": ["pytest>=9.2", "pytest-xdist>=3.8", "setuptools>=65.5", "wheel>=0.48"],
        # Only scripts/benchmark.py's PyTorch comparisons (skipped without it);
        # a large wheel that neither training nor the tests need.
        "benchmark": ["torch>=2.13.0"],
    },
)
