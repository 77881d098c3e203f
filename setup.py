"""sam_jax: Sharpness-Aware Minimization for JAX / Flax / optax."""

import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))


def read(path: str) -> str:
    with open(os.path.join(HERE, path), encoding="utf-8") as f:
        return f.read()


# One source for the version: sam_jax/__init__.py (read, not imported: importing
# the package needs its dependencies, which a build may not have).
VERSION = re.search(r'^__version__ = "([^"]+)"$', read("sam_jax/__init__.py"),
                    re.MULTILINE).group(1)

setuptools.setup(
    name="sam_jax",
    version=VERSION,
    description=("Sharpness-Aware Minimization (Foret et al., ICLR 2021) as an "
                 "optax transform, with config-driven trainers that reproduce "
                 "the paper."),
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    keywords="sharpness-aware minimization, SAM, optax, jax, flax, optimization",
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    ],
    # The declarations travel inside the package, so an installed copy finds
    # its configs and tables from any directory (sam_jax/declarations.py).
    packages=(setuptools.find_packages(include=["sam_jax", "sam_jax.*"])
              + ["sam_jax.configs"]
              + ["sam_jax.experiments" + p.removeprefix("experiments")
                 for p in setuptools.find_packages(include=["experiments",
                                                            "experiments.*"])]),
    package_dir={"sam_jax.configs": "configs", "sam_jax.experiments": "experiments"},
    # Besides the modules: py.typed (PEP 561) and picks.json, which the
    # comparison study's tables read when they are planned. The studies'
    # results, runs and READMEs stay in the repository (docs/installation.md).
    package_data={"sam_jax": ["py.typed"],
                  "sam_jax.experiments.review_comparison": ["picks.json"]},
    include_package_data=False,
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
        # The documentation site (docs/, built by .ci/run with -W) and the
        # release checks (python -m build; twine check dist/*).
        "docs": ["sphinx>=9.0", "furo>=2025.12.19", "myst-parser>=5.0"],
        "release": ["build>=1.3", "twine>=6.1"],
    },
)
