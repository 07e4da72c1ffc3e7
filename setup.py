"""Packaging for RL Swarm (Google Drive mode): `pip install -e .`"""

import os

from setuptools import find_packages, setup


def requirements():
    with open("requirements.txt") as fh:
        lines = (line.split("#", 1)[0].strip() for line in fh)
        return [line for line in lines if line]


setup(
    name="rl-swarm-gdrive",
    version="0.1.0",
    description="Decentralized RL post-training (SAPO) of small language models over a shared folder",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["genrl", "genrl.*", "rgym_exp", "rgym_exp.*"]),
    python_requires=">=3.10",
    install_requires=requirements(),
    extras_require={  # buckets (docs/OBJECT_STORES.md): exclusive writes need these versions
        "gcs": ["fsspec>=2025.2.0", "gcsfs>=2025.2.0"],
        "s3": ["fsspec>=2025.2.0", "s3fs>=2025.2.0"],
        # REPORT_TO's trackers (rgym_exp/trackers.py, docs/TAKEHOME.md)
        "tensorboard": ["tensorboardX>=2.6"],
        "wandb": ["wandb>=0.17"],
        "trackio": ["trackio>=0.2"],
        "dev": ["pytest>=7", "hypothesis>=6.80", "s3fs>=2025.2.0", "moto[server]>=5.1",
                "tensorboardX>=2.6"],
    },
    entry_points={"console_scripts": ["rl-swarm=rgym_exp.runner.swarm_launcher:main"]},
)
