"""Installable RecBole plugin: HDCCF (Yang et al., IJCAI 2022)."""

from setuptools import setup

# Why each pin:
# - torch==2.13.0 exactly: a CPU wheel of this release is on the build machines; any looser spec
#   makes pip download a multi-GB CUDA build.
# - recbole==1.2.1: the compatibility shims in recbole_hdccf/compat.py are written for this release.
# - numpy<2: RecBole's Config sets np.float_ aliases and ray 2.6.3 uses np.bool8, both gone in numpy 2.
# - pandas<3: pandas 3 copy-on-write breaks Dataset._fill_nan's fillna(inplace=True).
# - setuptools<81: ray 2.6.3 (imported by recbole.quick_start) imports pkg_resources.
# - hyperopt==0.2.5: the release RecBole's HyperTuning is written against.
INSTALL_REQUIRES = [
    "torch==2.13.0",
    "recbole==1.2.1",
    "numpy>=1.26,<2",
    "pandas>=2.2,<3",
    "setuptools>=77.0.3,<81",
    "hyperopt==0.2.5",
    "matplotlib>=3.7",
]

setup(
    name="recbole-hdccf",
    version="0.1.0",
    description="HDCCF (Hardness-Aware Debiased Contrastive CF) as a RecBole plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=["recbole_hdccf", "recbole_hdccf.properties"],
    # properties/ lives at the repository root (RecBole's layout) and ships inside the package.
    package_dir={"recbole_hdccf.properties": "properties"},
    package_data={"recbole_hdccf.properties": ["*.yaml", "*/*.yaml", "hyper/*.hyper"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=8", "hypothesis>=6", "ruff==0.17.6"]},
    entry_points={
        "console_scripts": [
            "recbole-hdccf-prepare=recbole_hdccf.prepare:main",
        ]
    },
)
